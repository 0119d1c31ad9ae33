//! Hot functions of the message path: parsing a frame's header, rendering the frame the node
//! sends (with `seq`), parsing an address, building an error response.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rethink_proto::{AddressRef, Code, Envelope, ResponseBuilder, parse_frame};
use std::hint::black_box;

const SMALL: &str = r#"{"id":42,"type":"PING","from":"hyperty://example.com/6e8f126b-3f1a-4c2e-9b61-0d1f5b7a9c01","to":"hyperty://example.com/0d1f5b7a-9c01-4c2e-9b61-6e8f126b3f1a","body":{"t":123456789,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#;

fn large() -> String {
    let pad = "y".repeat(16 * 1024);
    format!(
        r#"{{"id":"abc","type":"update","from":"comm://example.com/abc","to":"comm://example.com/abc/changes","body":{{"attribute":"doc","value":{{"text":"{pad}","list":[1,2,3]}}}}}}"#
    )
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("envelope_small", |b| {
        b.iter(|| Envelope::parse(black_box(SMALL)))
    });
    let big = large();
    g.bench_function("envelope_16k_body", |b| {
        b.iter(|| Envelope::parse(black_box(&big)))
    });
    let batch = format!("[{}]", vec![SMALL; 16].join(","));
    g.throughput(Throughput::Elements(16));
    g.bench_function("frame_batch_of_16", |b| {
        b.iter(|| parse_frame(black_box(&batch)))
    });
    g.finish();
}

fn render(c: &mut Criterion) {
    let env = Envelope::parse(SMALL).expect("valid");
    let mut out = String::with_capacity(512);
    c.bench_function("render/frame_with_seq", |b| {
        b.iter(|| {
            out.clear();
            Envelope::write_frame(black_box(env.json()), black_box(123_456), &mut out);
            out.len()
        })
    });
}

fn address(c: &mut Criterion) {
    c.bench_function("address/parse", |b| {
        b.iter(|| AddressRef::parse(black_box("hyperty://example.com/6e8f126b-3f1a-4c2e/sub")))
    });
}

fn response(c: &mut Criterion) {
    let env = Envelope::parse(SMALL).expect("valid");
    c.bench_function("response/build_404", |b| {
        b.iter(|| {
            ResponseBuilder::new(env.id_json(), env.first_to(), env.from(), Code::NOT_FOUND)
                .description("no such address")
                .build()
        })
    });
}

criterion_group!(benches, parse, render, address, response);
criterion_main!(benches);
