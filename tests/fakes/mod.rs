//! Fakes that speak the real wire protocols on loopback. Shared by several test crates, each of
//! which uses a different part, hence the dead-code allowance.
#![allow(dead_code)]

pub mod openai;
pub mod openclaw;
pub mod telegram;
pub mod whatsapp;
