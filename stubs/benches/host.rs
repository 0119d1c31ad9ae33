//! Stub host figures (criterion): a call into a stub with the envelope crossing the boundary
//! both ways (on-message in, bus.send out), instantiating a precompiled component (with its
//! init), and starting 20 stubs from precompiled components on a new host.
//!
//! `CARGO_TARGET_DIR=... cargo bench -p rethink-stubs --bench host`

#[path = "../tests/guests/mod.rs"]
mod guests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use guests::Init;
use rethink_proto::Envelope;
use rethink_stubs::{
    BusPort, DirectStub, Failure, Host, HostConfig, KvStore, LostReason, MemoryKv, StubMetrics,
    StubSpec,
};

/// Takes everything, keeps nothing.
#[derive(Debug)]
struct NullPort;

impl BusPort for NullPort {
    fn send(&self, _: &str, _: Envelope) -> Result<(), Failure> {
        Ok(())
    }
    fn add_listener(&self, _: &str, _: &str) -> Result<(), Failure> {
        Ok(())
    }
    fn remove_listener(&self, _: &str, _: &str) {}
    fn lost(&self, _: &str, _: Envelope, _: LostReason) {}
}

fn spec(name: &str) -> StubSpec {
    let mut s = StubSpec::new(name);
    s.addresses = vec!["hyperty://localhost/stub".into()];
    s
}

fn host(cache: &std::path::Path) -> Host {
    Host::new(
        HostConfig {
            cache_dir: Some(cache.to_owned()),
            max_instances: 64,
            ..HostConfig::default()
        },
        StubMetrics::unregistered(),
    )
    .expect("host")
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = guests::echo(Init::Normal { timer_ms: 600_000 });
    host(dir.path())
        .check(&bytes)
        .expect("compiles into the cache");
    let shared = host(dir.path());
    let checked = shared.check(&bytes).expect("loads from the cache");
    assert!(checked.from_cache());
    let port: Arc<dyn BusPort> = Arc::new(NullPort);
    let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());

    let message = Envelope::parse(
        r#"{"id":1,"type":"update","from":"hyperty://localhost/alice","to":"hyperty://localhost/stub","body":{"value":{"text":"hello"}}}"#,
    )
    .expect("message");
    let mut stub = rt
        .block_on(DirectStub::new(
            &shared,
            &checked,
            spec("bench"),
            port.clone(),
            kv.clone(),
        ))
        .expect("instantiates");
    c.bench_function("stub call: on-message in, bus.send out", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    stub.on_message(message.clone()).await.expect("call");
                }
                started.elapsed()
            })
        })
    });

    c.bench_function("load a precompiled component from the cache", |b| {
        b.iter(|| shared.check(&bytes).expect("check"))
    });

    c.bench_function("instantiate a precompiled stub and run its init", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let s = DirectStub::new(&shared, &checked, spec("i"), port.clone(), kv.clone())
                        .await
                        .expect("instantiates");
                    total += started.elapsed();
                    drop(s);
                }
                total
            })
        })
    });

    let mut group = c.benchmark_group("start");
    group.sample_size(10);
    group.bench_function(
        "new host + 20 stubs from precompiled components, inits done",
        |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let started = Instant::now();
                        let h = host(dir.path());
                        let mut handles = Vec::new();
                        for i in 0..20 {
                            let checked = h.check(&bytes).expect("cached");
                            handles.push(h.start(
                                &checked,
                                spec(&format!("s{i}")),
                                port.clone(),
                                kv.clone(),
                            ));
                        }
                        for s in &handles {
                            s.started().await;
                        }
                        total += started.elapsed();
                        for s in handles {
                            s.stop().await;
                        }
                    }
                    total
                })
            })
        },
    );
    group.finish();
}

criterion_group!(host_benches, benches);
criterion_main!(host_benches);
