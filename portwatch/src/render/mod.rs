//! The one place where model values, bucket rows and transitions become text or JSON.
//! `trace`, `dump`, `top`, `quiz`, `selftest` (and xtask, which reads their reports) all
//! render through here, so each value has one spelling everywhere: fastreuse `-1`/`0`/`+1`,
//! a truncated owner count `≥N`, errno `EADDRINUSE` (`EADDRINUSE (98)` with its number),
//! times in UTC.
//!
//! - [`values`]: the spelling of each model value (`Display` impls);
//! - [`columns`]: the bucket table's columns, defined once for `dump` and `top`;
//! - [`table`]: plain (borderless) tables and the `dump` table;
//! - [`transition`]: transitions as trace lines, quiz timeline lines, `top` descriptions;
//! - [`explain`]: why a bind/connect fails, as a report and as the line `trace`/`top` add;
//! - [`json`]: `trace --json` lines and the `dump --json` document;
//! - [`time`]: kernel timestamps as wall-clock time, ages and intervals;
//! - [`quiz`], [`selftest`]: the reports of those commands.

pub mod columns;
pub mod explain;
pub mod json;
pub mod quiz;
pub mod selftest;
pub mod table;
pub mod time;
pub mod transition;
pub mod values;
