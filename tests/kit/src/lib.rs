//! clawbox's test kit, shared by the integration tests (tests/*/main.rs) and the bench
//! (examples/bench): fakes that speak the real wire protocols on loopback ([`fakes`], a cargo
//! feature each) and the harness that runs the real `clawbox` binary against them ([`support`]:
//! spawn and read a process, a test box, the whole-system [`support::rig::Rig`], the fault proxy,
//! the /proc readings). Owns no assertion policy: the tests decide what passes.

pub mod fakes;
pub mod support;
