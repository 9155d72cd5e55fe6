//! `portwatch top`: a live, sorted, filterable table of bind buckets, fed by a
//! [`TopSource`] (an eBPF session in production, fakes in tests and in
//! `examples/top_demo.rs`). Events go through the reducer ([`app::TopApp`] holds it) and
//! rescans reconcile it: one owner of bucket state.
//!
//! - On a terminal: a ratatui TUI ([`run_tui`]) that pulls events every tick
//!   ([`TICK`]), draws when something changed (and once a second for ages), and walks
//!   the whole table again when its [`Schedule`] says so.
//! - With `--once`, or when stdout is not a terminal: the same columns as a plain table
//!   ([`run_plain`]): once, or every interval until SIGINT/SIGTERM: the whole table first,
//!   then only the rows that changed since the previous table (every row with
//!   `--all-rows`).

pub mod app;
#[cfg(test)]
mod fixtures;
pub mod schedule;
pub mod term;
pub mod ui;

use std::{
    io::{self, IsTerminal, Write},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use crossterm::event::Event;
use ratatui::{backend::Backend, layout::Rect, Terminal};

use self::app::{KeyOutcome, LastChange, RangeState, TopApp};
pub use self::schedule::{Rescan, Schedule};
use crate::{
    model::{BucketKey, NetInfo, Scope, Snapshot, SocketEvent},
    render::{
        table::{bucket_table, footer, table_to_string},
        time::{monotonic_now_ns, thread_cpu_time},
    },
};

/// Where `top` gets its data: an eBPF session in production, fakes in tests.
pub trait TopSource {
    /// A fresh walk (already filtered by netns/port).
    fn snapshot(&mut self) -> anyhow::Result<Snapshot>;
    /// What every walk covers (the netns/port filter).
    fn scope(&self) -> Scope;
    /// Events since the previous call, decoded.
    fn events(&mut self) -> anyhow::Result<Vec<SocketEvent>>;
    /// The ephemeral range of that netns (`ip_local_port_range` and the reserved ports
    /// inside it).
    fn port_range(&mut self, netns: u32) -> anyhow::Result<NetInfo>;
    /// The netns whose pressure the header shows.
    fn header_netns(&self) -> u32;
    /// E.g. "backend: tracepoint (fentry: EPERM; kprobe: kernel has no kprobes)".
    fn backend_summary(&self) -> String;
    fn dropped_events(&self) -> u64;
}

/// How often the TUI pulls events and redraws.
pub const TICK: Duration = Duration::from_millis(100);

/// Options of `portwatch top` that the view needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopOptions {
    /// Refresh interval (`--interval`, default 1 s): a plain table every interval, and
    /// the shortest time between walks.
    pub interval: Duration,
    /// When to walk the whole table again (`--rescan`).
    pub rescan: Rescan,
    /// Without a terminal, print every row every interval (`--all-rows`) rather than the
    /// rows that changed since the previous table.
    pub all_rows: bool,
    /// `--once`: print the table once and exit.
    pub once: bool,
    /// What `--netns` selected, for the header, e.g. "all" or "4026531840 (pid 1)".
    pub netns_label: String,
    /// `--port`, shown in the header (the source already filters by it).
    pub port: Option<u16>,
    /// Always show the NETNS column (`--netns all`); otherwise only when rows of several
    /// namespaces are shown.
    pub show_netns: bool,
}

impl Default for TopOptions {
    fn default() -> Self {
        TopOptions {
            interval: Duration::from_secs(1),
            rescan: Rescan::Auto,
            all_rows: false,
            once: false,
            netns_label: "self".to_owned(),
            port: None,
            show_netns: false,
        }
    }
}

/// Terminal input for the TUI loop (crossterm in production, scripted in tests).
pub trait EventSource {
    /// The next input event, waiting at most `timeout`; `None` on timeout.
    fn next_event(&mut self, timeout: Duration) -> anyhow::Result<Option<Event>>;
}

/// Reads terminal events with crossterm.
#[derive(Debug, Default)]
pub struct CrosstermEvents;

impl EventSource for CrosstermEvents {
    fn next_event(&mut self, timeout: Duration) -> anyhow::Result<Option<Event>> {
        match crossterm::event::poll(timeout) {
            Ok(true) => Ok(Some(
                crossterm::event::read().context("reading a terminal event")?,
            )),
            Ok(false) => Ok(None),
            // A signal (SIGTERM, SIGWINCH) interrupted the wait: the loop checks its flag.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(e).context("waiting for terminal input"),
        }
    }
}

/// Runs `top`: the TUI on a terminal, else plain tables (once with `--once`, or every
/// interval until SIGINT/SIGTERM).
pub fn run_top(src: &mut dyn TopSource, opts: &TopOptions) -> anyhow::Result<()> {
    let stdout = io::stdout();
    if opts.once {
        let stop = AtomicBool::new(false);
        return run_plain(src, opts, &mut stdout.lock(), &stop);
    }
    let signals = term::SignalGuard::install()?;
    if !stdout.is_terminal() {
        return run_plain(src, opts, &mut stdout.lock(), signals.flag());
    }
    let guard = term::TerminalGuard::enter()?;
    let mut terminal = Terminal::new(ratatui::backend::CrosstermBackend::new(io::stdout()))
        .context("setting up the terminal for the live view")?;
    terminal.clear().context("clearing the terminal")?;
    let result = run_tui(
        &mut terminal,
        src,
        opts,
        &mut CrosstermEvents,
        signals.flag(),
    );
    drop(terminal);
    drop(guard);
    result
}

/// Pulls a snapshot and the port range into `app` and tells `schedule` what the walk cost
/// (CPU time of this thread, the kernel's walk included; wall time if that clock cannot
/// be read). Events are pulled first so the walk has the last word.
fn rescan(
    app: &mut TopApp,
    src: &mut dyn TopSource,
    schedule: &mut Schedule,
    now: Instant,
) -> anyhow::Result<()> {
    let cpu0 = thread_cpu_time().ok();
    let snap = src.snapshot().context("walking the bind hash table")?;
    let ts_ns = monotonic_now_ns().context("reading the time of the walk")?;
    app.apply_snapshot(snap, src.scope(), ts_ns, now);
    let netns = app.header_netns;
    app.set_port_range(match src.port_range(netns) {
        Ok(range) => RangeState::Known(range),
        Err(e) => RangeState::Failed(format!("{e:#}")),
    });
    app.dropped = src.dropped_events();
    let cost = match (cpu0, thread_cpu_time().ok()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => now.elapsed(),
    };
    // Events lost since the last walk (counted before or during this one): the next
    // walk repairs what this one may have raced with.
    let lost = app.dropped != app.dropped_at_walk;
    app.dropped_at_walk = app.dropped;
    schedule.walked(now, cost, lost);
    app.walk_cost = schedule.cost();
    app.rescan_every = Some(schedule.period());
    Ok(())
}

/// Applies the events that arrived; returns how many.
fn pull_events(app: &mut TopApp, src: &mut dyn TopSource, now: Instant) -> anyhow::Result<usize> {
    let evs = src.events().context("reading bucket events")?;
    let n = evs.len();
    app.apply_events(evs, now);
    app.dropped = src.dropped_events();
    Ok(n)
}

/// The three header lines of a plain frame.
fn plain_header(app: &TopApp, opts: &TopOptions) -> String {
    let mut out = String::new();
    out.push_str(&ui::title_line(app, opts));
    out.push('\n');
    out.push_str(&ui::pressure_line(app, opts));
    out.push('\n');
    out.push_str(&ui::status_line(app));
    out.push('\n');
    out
}

/// One plain frame: the three header lines, then the table with the TUI's columns.
pub fn render_plain(app: &TopApp, opts: &TopOptions, now: Instant) -> String {
    let cols = ui::Columns::for_app(app, opts);
    let mut table = bucket_table(&cols.bucket, &ui::META_TITLES);
    for row in app.view() {
        table.add_row(cols.cells(&row, now));
    }
    let mut out = plain_header(app, opts);
    out.push_str(&table_to_string(&table));
    footer(
        &mut out,
        app.view_len() == 0,
        app.truncated,
        !app.incomplete,
    );
    out
}

/// Printed in a plain frame when no bucket changed since the previous table.
pub const NO_CHANGE_MESSAGE: &str = "no bucket changed since the previous table";

/// A plain frame after the first: the three header lines, then the rows of the buckets
/// that changed since the previous frame (`changes`, from [`TopApp::take_changes`]), a
/// bucket gone since with `-` for its values. Unchanged rows are not repeated: the first
/// table and these frames give the state at every frame.
pub fn render_changes(
    app: &TopApp,
    opts: &TopOptions,
    changes: &[(BucketKey, LastChange)],
    now: Instant,
) -> String {
    let mut out = plain_header(app, opts);
    if changes.is_empty() {
        out.push_str(NO_CHANGE_MESSAGE);
        out.push('\n');
    } else {
        let n = changes.len();
        out.push_str(&format!(
            "{n} bucket{} changed since the previous table ({} now; unchanged rows are not \
             repeated, --all-rows prints every row)\n",
            if n == 1 { "" } else { "s" },
            app.len()
        ));
        let cols = ui::Columns::for_app(app, opts);
        let mut table = bucket_table(&cols.bucket, &ui::META_TITLES);
        for (key, change) in changes {
            table.add_row(match app.row(key) {
                Some(row) => cols.cells(&row, now),
                None => cols.gone_cells(key, change, now),
            });
        }
        out.push_str(&table_to_string(&table));
    }
    footer(&mut out, false, app.truncated, !app.incomplete);
    out
}

/// Plain output: one table with `opts.once`, else a frame every interval (events are
/// pulled every [`TICK`] in between, so LAST CHANGE is filled) until `stop` is set: the
/// whole table first, then the rows changed since the previous frame (every row with
/// `opts.all_rows`). Walks come when the [`Schedule`] says. A closed pipe (`| head`)
/// ends the loop quietly.
pub fn run_plain(
    src: &mut dyn TopSource,
    opts: &TopOptions,
    out: &mut dyn Write,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut app = TopApp::new(src.header_netns(), src.backend_summary());
    let interval = opts.interval.max(TICK);
    let mut schedule = Schedule::new(opts.rescan, interval);
    let deltas = !opts.once && !opts.all_rows;
    if deltas {
        app.track_changes();
    }
    let mut first = true;
    loop {
        let now = Instant::now();
        if !opts.once {
            pull_events(&mut app, src, now)?;
        }
        if schedule.due(now) {
            rescan(&mut app, src, &mut schedule, now)?;
        }
        if opts.once {
            app.rescan_every = None;
        }
        app.refresh_view();
        let mut frame = String::new();
        if !first {
            frame.push('\n');
        }
        let changes = app.take_changes();
        if first || !deltas {
            frame.push_str(&render_plain(&app, opts, now));
        } else {
            frame.push_str(&render_changes(&app, opts, &changes, now));
        }
        first = false;
        match out.write_all(frame.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e).context("writing the table to stdout"),
        }
        if opts.once {
            return Ok(());
        }
        let next = now + interval;
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(TICK));
            pull_events(&mut app, src, Instant::now())?;
        }
    }
}

/// The TUI loop on any ratatui backend: pull events every [`TICK`], rescan every
/// `opts.interval` (and right after un-pausing), handle keys while waiting for the next
/// tick, draw every tick and after each key. Returns on `q`/Esc/Ctrl-C or when `stop` is
/// set (SIGTERM).
pub fn run_tui<B: Backend>(
    terminal: &mut Terminal<B>,
    src: &mut dyn TopSource,
    opts: &TopOptions,
    events: &mut dyn EventSource,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut app = TopApp::new(src.header_netns(), src.backend_summary());
    let interval = opts.interval.max(TICK);
    let mut schedule = Schedule::new(opts.rescan, interval);
    let mut next_tick = Instant::now();
    // Sorting, filtering and drawing happen only when something changed, and once a
    // second for ages and fading highlights: an idle screen costs next to nothing.
    let mut dirty = true;
    let mut next_paint = Instant::now();
    // While paused the screen is frozen, ages included.
    let mut frozen_at: Option<Instant> = None;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let now = Instant::now();
        let shown_at = if app.paused {
            *frozen_at.get_or_insert(now)
        } else {
            now
        };
        if !app.paused {
            frozen_at = None;
        }
        if now >= next_tick {
            if !app.paused {
                if pull_events(&mut app, src, now)? > 0 {
                    dirty = true;
                }
                if schedule.due(now) {
                    rescan(&mut app, src, &mut schedule, now)?;
                    // The status line counts walks; the view is sorted again only if the
                    // walk corrected something.
                    dirty = true;
                }
            }
            next_tick = now + TICK;
        }
        if now >= next_paint {
            dirty = true;
        }
        if dirty {
            let size = terminal.size().context("reading the terminal size")?;
            app.page = ui::page_size(Rect::new(0, 0, size.width, size.height));
            app.refresh_view();
            terminal
                .draw(|f| ui::draw(f, &app, opts, shown_at))
                .context("drawing the screen")?;
            dirty = false;
            next_paint = now + Duration::from_secs(1);
        }

        // Wait for keys until the next tick; a key that changes the view redraws now.
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let left = next_tick.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match events.next_event(left)? {
                None => break,
                Some(Event::Key(key)) => match app.handle_key(key) {
                    KeyOutcome::Quit => return Ok(()),
                    KeyOutcome::Nothing => {}
                    KeyOutcome::Redraw => {
                        dirty = true;
                        break;
                    }
                    KeyOutcome::Resume => {
                        schedule.now();
                        next_tick = Instant::now();
                        dirty = true;
                        break;
                    }
                },
                Some(Event::Resize(..)) => {
                    dirty = true;
                    break;
                }
                Some(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::backend::TestBackend;

    use super::{fixtures::info, *};
    use crate::{
        model::{BucketInfo, BucketKey, Op, Task},
        render::table::{EMPTY_MESSAGE, TRUNCATED_FOOTER},
    };

    const NS: u32 = 4026532000;

    fn key(port: u16) -> BucketKey {
        fixtures::key(NS, port)
    }

    /// Serves scripted snapshots (the last one repeats) and transition batches.
    struct FakeSource {
        snapshots: VecDeque<Snapshot>,
        batches: VecDeque<Vec<SocketEvent>>,
        range: Result<NetInfo, String>,
        snapshot_calls: usize,
        event_calls: usize,
        fail_snapshot: bool,
    }

    impl FakeSource {
        fn new(snapshots: Vec<Snapshot>, batches: Vec<Vec<SocketEvent>>) -> Self {
            FakeSource {
                snapshots: snapshots.into(),
                batches: batches.into(),
                range: Ok(fixtures::net(60000, 60001)),
                snapshot_calls: 0,
                event_calls: 0,
                fail_snapshot: false,
            }
        }
    }

    impl TopSource for FakeSource {
        fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
            self.snapshot_calls += 1;
            if self.fail_snapshot {
                anyhow::bail!("map bhash_walk not loaded");
            }
            let s = if self.snapshots.len() > 1 {
                self.snapshots.pop_front()
            } else {
                self.snapshots.front().cloned()
            };
            Ok(s.unwrap_or_default())
        }
        fn scope(&self) -> Scope {
            Scope {
                netns: Some(NS),
                port: None,
            }
        }
        fn events(&mut self) -> anyhow::Result<Vec<SocketEvent>> {
            self.event_calls += 1;
            Ok(self.batches.pop_front().unwrap_or_default())
        }
        fn port_range(&mut self, netns: u32) -> anyhow::Result<NetInfo> {
            assert_eq!(netns, NS);
            self.range.clone().map_err(|e| anyhow::anyhow!(e))
        }
        fn header_netns(&self) -> u32 {
            NS
        }
        fn backend_summary(&self) -> String {
            "backend: fake".to_owned()
        }
        fn dropped_events(&self) -> u64 {
            0
        }
    }

    fn snap(rows: &[(u16, BucketInfo)]) -> Snapshot {
        let rows: Vec<(BucketKey, BucketInfo)> = rows.iter().map(|(p, i)| (key(*p), *i)).collect();
        fixtures::snap(&rows)
    }

    /// connect() of pid 1 (`curl`) to 127.9.9.9:1234 from the only port of the range.
    fn created(port: u16, i: BucketInfo) -> SocketEvent {
        SocketEvent {
            task: Task::Process {
                pid: 1,
                comm: "curl".into(),
            },
            local: None,
            remote: Some(std::net::SocketAddr::from(([127, 9, 9, 9], 1234))),
            port_from_range: true,
            ..fixtures::ev(Op::Connect, key(port), Some(i))
        }
    }

    #[test]
    fn once_prints_one_table_with_the_tui_columns() {
        let mut src = FakeSource::new(
            vec![snap(&[(60000, info(-1, -1, 2)), (1234, info(0, -1, 1))])],
            vec![],
        );
        let opts = TopOptions {
            once: true,
            ..TopOptions::default()
        };
        let mut out = Vec::new();
        run_plain(&mut src, &opts, &mut out, &AtomicBool::new(false)).expect("run");
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("portwatch top │ backend: fake │ netns self"),
            "{text}"
        );
        assert!(lines[1].contains("ip_local_port_range 60000-60001 (2 ports): 1 free, 1 shared by connect(), 0 blocked"), "{text}");
        let hdr: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            hdr,
            [
                "TCP-PORT",
                "FASTREUSE",
                "FASTREUSEPORT",
                "#OWNERS",
                "AGE",
                "LAST",
                "CHANGE"
            ]
        );
        assert_eq!(
            lines[4].split_whitespace().collect::<Vec<_>>(),
            ["1234", "0", "-1", "1", "-"]
        );
        assert_eq!(
            lines[5].split_whitespace().collect::<Vec<_>>(),
            ["60000", "-1", "-1", "2", "-"]
        );
        assert_eq!(lines.len(), 6, "{text}");
        assert_eq!((src.snapshot_calls, src.event_calls), (1, 0));
    }

    #[test]
    fn once_on_empty_snapshot_and_failing_range() {
        let mut src = FakeSource::new(
            vec![Snapshot {
                owners_truncated: true,
                ..Snapshot::default()
            }],
            vec![],
        );
        src.range = Err("cannot read ip_local_port_range of netns 4026532000".into());
        let opts = TopOptions {
            once: true,
            ..TopOptions::default()
        };
        let mut out = Vec::new();
        run_plain(&mut src, &opts, &mut out, &AtomicBool::new(false)).expect("run");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.contains("unavailable (cannot read ip_local_port_range of netns 4026532000)"),
            "{text}"
        );
        assert!(text.contains(EMPTY_MESSAGE));
        assert!(text.trim_end().ends_with(TRUNCATED_FOOTER), "{text}");
    }

    #[test]
    fn snapshot_errors_propagate_with_context() {
        let mut src = FakeSource::new(vec![], vec![]);
        src.fail_snapshot = true;
        let opts = TopOptions {
            once: true,
            ..TopOptions::default()
        };
        let err = run_plain(&mut src, &opts, &mut Vec::new(), &AtomicBool::new(false))
            .expect_err("fails");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("walking the bind hash table") && msg.contains("bhash_walk"),
            "{msg}"
        );
    }

    /// A writer that fails like a closed pipe.
    struct ClosedPipe;
    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_loop_repeats_until_stopped_and_ends_on_closed_pipe() {
        let mut src = FakeSource::new(
            vec![snap(&[(80, info(0, -1, 1))])],
            vec![vec![], vec![created(60000, info(-1, -1, 1))]],
        );
        let opts = TopOptions {
            interval: Duration::from_millis(100),
            ..TopOptions::default()
        };
        // Stop from another thread after a few frames.
        let stop = AtomicBool::new(false);
        let mut out = Vec::new();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(450));
                stop.store(true, Ordering::SeqCst);
            });
            run_plain(&mut src, &opts, &mut out, &stop).expect("run");
        });
        let text = String::from_utf8(out).expect("utf8");
        let frames = text.matches("portwatch top │").count();
        assert!((3..=6).contains(&frames), "{frames} frames:\n{text}");
        assert!(src.event_calls >= frames);
        // The event-created bucket shows until the next rescan replaces it.
        assert!(
            text.contains("created -1/-1 (connect)") || text.contains("60000"),
            "{text}"
        );

        let mut src = FakeSource::new(vec![snap(&[(80, info(0, -1, 1))])], vec![]);
        run_plain(
            &mut src,
            &TopOptions::default(),
            &mut ClosedPipe,
            &AtomicBool::new(false),
        )
        .expect("broken pipe is a normal end");
    }

    /// Keeps what the plain loop writes and sets `stop` once `n` frames were flushed (one
    /// flush per frame): a number of frames whatever the machine's load.
    struct Frames<'a> {
        buf: Vec<u8>,
        flushed: usize,
        n: usize,
        stop: &'a AtomicBool,
    }
    impl Write for Frames<'_> {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.buf.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.flushed += 1;
            if self.flushed >= self.n {
                self.stop.store(true, Ordering::SeqCst);
            }
            Ok(())
        }
    }

    /// Runs the plain loop for `n` frames; returns them.
    fn plain_frames(src: &mut FakeSource, opts: &TopOptions, n: usize) -> Vec<String> {
        let stop = AtomicBool::new(false);
        let mut out = Frames {
            buf: Vec::new(),
            flushed: 0,
            n,
            stop: &stop,
        };
        run_plain(src, opts, &mut out, &stop).expect("run");
        let text = String::from_utf8(out.buf).expect("utf8");
        text.split("\n\nportwatch top │")
            .map(str::to_owned)
            .collect()
    }

    /// The table rows of a frame whose first cell is `port`.
    fn rows_of(frame: &str, port: u16) -> Vec<&str> {
        frame
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(&*port.to_string()))
            .collect()
    }

    #[test]
    fn plain_frames_after_the_first_print_only_changed_rows() {
        // Events only (one walk): 60000 created, 80 gains an owner, later.
        let mut src = FakeSource::new(
            vec![snap(&[(80, info(0, -1, 1)), (443, info(0, -1, 1))])],
            vec![
                vec![],
                vec![created(60000, info(-1, -1, 1))],
                vec![],
                vec![created(80, info(0, -1, 2))],
            ],
        );
        let opts = TopOptions {
            interval: Duration::from_millis(100),
            rescan: Rescan::Every(Duration::from_secs(60)),
            ..TopOptions::default()
        };
        let frames = plain_frames(&mut src, &opts, 8);
        let all = frames.join("\n----\n");
        assert_eq!(frames.len(), 8, "{all}");
        assert_eq!(rows_of(&frames[0], 80).len(), 1, "{all}");
        assert_eq!(rows_of(&frames[0], 443).len(), 1, "{all}");
        for f in &frames[1..] {
            assert!(
                f.contains(NO_CHANGE_MESSAGE) || f.contains("changed since the previous table"),
                "{all}"
            );
        }
        // Each change shows once, in the frame after it; unchanged rows never again.
        let later =
            |port| -> Vec<&str> { frames[1..].iter().flat_map(|f| rows_of(f, port)).collect() };
        let created_rows = later(60000);
        assert_eq!(created_rows.len(), 1, "{all}");
        assert!(created_rows[0].contains("created -1/-1 (connect)"), "{all}");
        assert_eq!(later(80).len(), 1, "{all}");
        assert!(later(80)[0].contains("owners 1→2 (connect)"), "{all}");
        assert!(later(443).is_empty(), "{all}");
        assert!(
            frames.iter().any(|f| f.contains(NO_CHANGE_MESSAGE)),
            "{all}"
        );

        // Walks: the third finds 443 gone and 80 with two owners.
        let mut src = FakeSource::new(
            vec![
                snap(&[(80, info(0, -1, 1)), (443, info(0, -1, 1))]),
                snap(&[(80, info(0, -1, 1)), (443, info(0, -1, 1))]),
                snap(&[(80, info(0, -1, 2))]),
            ],
            vec![],
        );
        let opts = TopOptions {
            rescan: Rescan::Every(Duration::from_millis(100)),
            ..opts
        };
        let frames = plain_frames(&mut src, &opts, 5);
        let all = frames.join("\n----\n");
        let later = |port| -> Vec<Vec<&str>> {
            frames[1..]
                .iter()
                .flat_map(|f| rows_of(f, port))
                .map(|r| r.split_whitespace().collect())
                .collect()
        };
        assert_eq!(
            later(443),
            [["443", "-", "-", "-", "0.0s", "gone", "(rescan)"]],
            "a bucket gone shows `-` for its values: {all}"
        );
        assert_eq!(
            later(80),
            [["80", "0", "-1", "2", "0.0s", "owners", "1→2", "(rescan)"]],
            "{all}"
        );
        assert!(
            all.contains("2 buckets changed since the previous table (1 now;"),
            "{all}"
        );

        // --all-rows: every row in every frame.
        let mut src = FakeSource::new(vec![snap(&[(80, info(0, -1, 1))])], vec![]);
        let opts = TopOptions {
            all_rows: true,
            ..opts
        };
        let frames = plain_frames(&mut src, &opts, 3);
        assert_eq!(frames.len(), 3);
        assert!(
            frames.iter().all(|f| rows_of(f, 80).len() == 1),
            "{}",
            frames.join("\n----\n")
        );
    }

    #[test]
    fn walks_follow_the_schedule() {
        // A fixed rescan of 10 s with a 100 ms interval: one walk in 4 frames (0.3 s).
        let mut src = FakeSource::new(vec![snap(&[(80, info(0, -1, 1))])], vec![]);
        let opts = TopOptions {
            interval: Duration::from_millis(100),
            rescan: Rescan::Every(Duration::from_secs(10)),
            ..TopOptions::default()
        };
        let frames = plain_frames(&mut src, &opts, 4);
        assert_eq!(frames.len(), 4, "{frames:?}");
        assert_eq!(src.snapshot_calls, 1);
        assert!(
            frames[0].contains("scans: 1 (every 10s, "),
            "the status line says how often and at what cost: {}",
            frames[0]
        );
        // --once: one walk, its cost, no spacing.
        let mut src = FakeSource::new(vec![snap(&[(80, info(0, -1, 1))])], vec![]);
        let frames = plain_frames(
            &mut src,
            &TopOptions {
                once: true,
                ..TopOptions::default()
            },
            1,
        );
        assert!(frames[0].contains("scans: 1 ("), "{}", frames[0]);
        assert!(!frames[0].contains("(every"), "{}", frames[0]);
    }

    /// Scripted input; `None` waits out the timeout like a real idle terminal. When the
    /// script is exhausted, presses `q`.
    struct Keys(VecDeque<Option<Event>>);
    impl EventSource for Keys {
        fn next_event(&mut self, timeout: Duration) -> anyhow::Result<Option<Event>> {
            match self.0.pop_front() {
                Some(None) => {
                    std::thread::sleep(timeout);
                    Ok(None)
                }
                Some(ev) => Ok(ev),
                None => Ok(Some(Event::Key(KeyEvent::from(KeyCode::Char('q'))))),
            }
        }
    }
    fn k(c: char) -> Option<Event> {
        Some(Event::Key(KeyEvent::from(KeyCode::Char(c))))
    }

    fn screen(term: &Terminal<TestBackend>) -> String {
        let buf = term.backend().buffer();
        let w = usize::from(buf.area.width);
        buf.content()
            .chunks(w)
            .map(|r| r.iter().map(|c| c.symbol()).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn tui_loop_applies_events_filters_and_quits() {
        let mut src = FakeSource::new(
            vec![snap(&[(80, info(0, -1, 1)), (8080, info(1, -1, 2))])],
            vec![vec![], vec![created(60000, info(-1, -1, 1))]],
        );
        let mut term = Terminal::new(TestBackend::new(120, 30)).expect("terminal");
        let opts = TopOptions::default();
        // tick 1: no key (timeout); tick 2: events arrive; then filter on 8080.
        let mut keys = Keys(
            vec![
                None,
                None,
                k('/'),
                k('8'),
                k('0'),
                k('8'),
                k('0'),
                Some(Event::Key(KeyEvent::from(KeyCode::Enter))),
            ]
            .into(),
        );
        run_tui(
            &mut term,
            &mut src,
            &opts,
            &mut keys,
            &AtomicBool::new(false),
        )
        .expect("tui");
        let s = screen(&term);
        assert!(s.contains("filter: \"8080\""), "{s}");
        assert!(s.contains("│8080"), "{s}");
        assert!(!s.contains("│80 "), "{s}");
        // The pane still lists the created bucket.
        assert!(s.contains(":60000  created -1/-1 (connect)  pid 1 curl  → 127.9.9.9:1234  (only port of the range)"), "{s}");
        assert!(src.snapshot_calls >= 1 && src.event_calls >= 2);
    }

    #[test]
    fn tui_loop_pause_stops_pulling_and_stop_flag_exits() {
        let mut src = FakeSource::new(vec![snap(&[(80, info(0, -1, 1))])], vec![]);
        let mut term = Terminal::new(TestBackend::new(100, 24)).expect("terminal");
        let mut keys = Keys(vec![k('p'), None, None, None].into());
        // After 'p' and three idle ticks, the default 'q' ends it.
        run_tui(
            &mut term,
            &mut src,
            &TopOptions::default(),
            &mut keys,
            &AtomicBool::new(false),
        )
        .expect("tui");
        assert_eq!(src.snapshot_calls, 1, "paused: no rescans");
        assert!(screen(&term).contains("PAUSED"));

        let stop = AtomicBool::new(true);
        let mut keys = Keys(VecDeque::new());
        run_tui(
            &mut term,
            &mut src,
            &TopOptions::default(),
            &mut keys,
            &stop,
        )
        .expect("stop flag");

        // Ctrl-C quits.
        let mut keys = Keys(
            vec![Some(Event::Key(KeyEvent::new(
                KeyCode::Char('c'),
                KeyModifiers::CONTROL,
            )))]
            .into(),
        );
        run_tui(
            &mut term,
            &mut src,
            &TopOptions::default(),
            &mut keys,
            &AtomicBool::new(false),
        )
        .expect("ctrl-c");
    }
}
