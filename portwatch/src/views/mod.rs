//! Interactive views. `top`: a live table of bind buckets over a [`top::TopSource`]
//! (`dump` prints once and needs no view: see [`crate::render::table`]).

pub mod top;
