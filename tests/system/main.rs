//! The whole box under long, measured runs: soak with faults on every link (`soak`), SIGKILL
//! loops (`crash_loop`), one channel blackholed while the other's latency is measured
//! (`isolation`) and an idle box's writes (`idle`). Each of these had a test binary of its own and
//! so ran with nothing else of the suite beside it; here every test takes the kit's lock as its
//! first step (`support::alone::alone()`, or `shared()` for the two crash loops, which always ran
//! side by side) so that still holds. A new test in this binary must take one too. One test binary
//! (one link of the WhatsApp stack); select a module with `cargo test --test system soak::`.

mod crash_loop;
mod idle;
mod isolation;
mod soak;
