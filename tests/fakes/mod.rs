#![allow(dead_code)]
pub mod whatsapp;
