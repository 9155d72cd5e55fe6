//! This crate is a build dependency of `portwatch` only so that cargo rebuilds the
//! eBPF object when its sources change; the programs live in `main.rs`.
#![no_std]
