//! Test guests built at test time: core modules in WAT (the canonical ABI by hand), given the
//! WIT world as metadata and wrapped into components with `wit-component`.

#![allow(dead_code, unreachable_pub)]

use wit_component::{ComponentEncoder, StringEncoding, embed_component_metadata};
use wit_parser::Resolve;

/// The WIT of the host, as shipped.
pub const WIT: &str = include_str!("../../wit/stub.wit");

const ECHO: &str = include_str!("echo.wat");

/// How the echo guest behaves at init.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    /// Starts normally; timer 7 fires after `ms`.
    Normal { timer_ms: u64 },
    /// Traps in every init: the instance never starts.
    Trap,
}

/// Wraps the core module `wat` into a component of `world` in the WIT text `wit`.
pub fn component(wat: &str, wit: &str, world: &str) -> Vec<u8> {
    let mut module = wat::parse_str(wat).expect("the test guest's WAT parses");
    let mut resolve = Resolve::default();
    let pkg = resolve.push_str("stub.wit", wit).expect("the WIT parses");
    let world = resolve
        .select_world(&[pkg], Some(world))
        .expect("the world exists");
    embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8)
        .expect("metadata embeds");
    ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .expect("the module is a valid stub core module")
        .encode()
        .expect("the component encodes")
}

/// The echo guest (see echo.wat) as a protocol-stub component, in domain `localhost`.
pub fn echo(init: Init) -> Vec<u8> {
    echo_in(init, "localhost")
}

/// The echo guest for `domain`: its default address is `hyperty://<domain>/stub`, its timer
/// writes to `hyperty://<domain>/alice`, its reports go to `hyperty-runtime://<domain>/observer`.
pub fn echo_in(init: Init, domain: &str) -> Vec<u8> {
    component(&echo_wat(init, domain), WIT, "protocol-stub")
}

/// The echo guest's WAT text.
pub fn echo_wat(init: Init, domain: &str) -> String {
    let (prelude, ms) = match init {
        Init::Normal { timer_ms } => (String::new(), timer_ms),
        Init::Trap => ("unreachable".to_owned(), 1),
    };
    let stub = format!("hyperty://{domain}/stub");
    let alice = format!("hyperty://{domain}/alice");
    let observer = format!("hyperty-runtime://{domain}/observer");
    assert!(stub.len() <= 64 && alice.len() <= 64 && observer.len() <= 64);
    ECHO.replace("{{INIT}}", &prelude)
        .replace("{{TIMER_MS}}", &ms.to_string())
        .replace("{{STUB_LEN}}", &stub.len().to_string())
        .replace("{{ALICE_LEN}}", &alice.len().to_string())
        .replace("{{OBSERVER_LEN}}", &observer.len().to_string())
        .replace("{{STUB}}", &stub)
        .replace("{{ALICE}}", &alice)
        .replace("{{OBSERVER}}", &observer)
}

/// The echo guest built against a WIT whose package version is `version`.
pub fn echo_with_version(version: &str) -> Vec<u8> {
    let wit = WIT.replace("rethink:stub@0.1.0", &format!("rethink:stub@{version}"));
    let wat = echo_wat(Init::Normal { timer_ms: 1 }, "localhost")
        .replace("@0.1.0", &format!("@{version}"));
    component(&wat, &wit, "protocol-stub")
}

/// The timer storm guest (see storm.wat): keeps timers 0 .. `timers`-1 firing, each call
/// setting them all again.
pub fn storm(timers: u64) -> Vec<u8> {
    let wat = include_str!("storm.wat").replace("{{N}}", &timers.to_string());
    component(&wat, WIT, "protocol-stub")
}
