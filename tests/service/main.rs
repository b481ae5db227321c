//! The box as a service and a command line, through the real binary and the shipped files: config
//! errors (`config`), `import openclaw`, `doctor`, `providers test`, where the state lives
//! (`state_dir`), pairing through the running service (`control`), the web page (`web`), no
//! network (`offline`), sd_notify and the watchdog (`systemd_notify`), the unit files
//! (`systemd_unit`) and the first-boot script (`firstboot`). Every test has its own temp dirs and
//! free ports, so they run side by side. One test binary (one link of the WhatsApp stack); select
//! a module with `cargo test --test service doctor::`.

mod config;
mod control;
mod doctor;
mod firstboot;
mod import;
mod offline;
mod providers;
mod state_dir;
mod systemd_notify;
mod systemd_unit;
mod web;
