//! Rendering of `portwatch top` with ratatui: header, bucket table with highlighted
//! changed cells, recent-transitions pane and key footer. Pure drawing: reads a
//! [`TopApp`], does no I/O. The text helpers are shared with the plain (non-TTY) output.

use std::time::{Duration, Instant};

use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Paragraph, Row, Table},
    Frame,
};

use super::{
    app::{LastChange, RangeState, TopApp, TopRow, RECENT_CAPACITY},
    TopOptions,
};
use crate::{
    model::{BucketKey, TransitionKind},
    render::{
        columns::{Column, Shown},
        time::{age, interval},
        transition::{describe, recent_line},
    },
};

/// The table's columns: the bucket columns ([`Column`], shared with `dump`), then AGE
/// and LAST CHANGE from the row's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Columns {
    pub bucket: Vec<Column>,
}

/// The titles after the bucket columns.
pub const META_TITLES: [&str; 2] = ["AGE", "LAST CHANGE"];

impl Columns {
    /// NETNS when asked for (`--netns all`) or when rows of several namespaces are shown;
    /// L3MDEV when any row belongs to a VRF.
    pub fn for_app(app: &TopApp, opts: &TopOptions) -> Columns {
        let shown = Shown::for_keys(app.view_keys().iter().copied(), opts.show_netns);
        Columns {
            bucket: Column::shown(shown),
        }
    }

    /// Column titles, in order.
    pub fn titles(&self) -> Vec<&'static str> {
        self.bucket
            .iter()
            .map(|c| c.title())
            .chain(META_TITLES)
            .collect()
    }

    /// Cell texts of one row, matching [`Columns::titles`].
    pub fn cells(&self, row: &TopRow<'_>, now: Instant) -> Vec<String> {
        let mut v: Vec<String> = self
            .bucket
            .iter()
            .map(|c| c.cell(&row.key, &row.info))
            .collect();
        match row.last_change() {
            Some(c) => {
                v.push(age(now.saturating_duration_since(c.at)));
                v.push(describe(&c.transition));
            }
            None => {
                v.push("-".to_owned());
                v.push(String::new());
            }
        }
        v
    }

    /// Cell texts of a bucket gone since (its last change says how it went): its identity,
    /// `-` for the values it no longer has.
    pub fn gone_cells(&self, key: &BucketKey, change: &LastChange, now: Instant) -> Vec<String> {
        let mut v: Vec<String> = self
            .bucket
            .iter()
            .map(|c| c.key_cell(key).unwrap_or_else(|| "-".to_owned()))
            .collect();
        v.push(age(now.saturating_duration_since(change.at)));
        v.push(describe(&change.transition));
        v
    }

    /// Whether the NETNS column is shown (the recent pane then shows namespaces too).
    pub fn netns(&self) -> bool {
        self.bucket.contains(&Column::Netns)
    }
}

/// First header line: what is watched and how.
pub fn title_line(app: &TopApp, opts: &TopOptions) -> String {
    let mut s = format!(
        "portwatch top │ {} │ netns {} │ every {}",
        app.backend,
        opts.netns_label,
        interval(opts.interval)
    );
    if let Some(p) = opts.port {
        s.push_str(&format!(" │ port {p}"));
    }
    s
}

/// Second header line: port pressure of the header netns.
pub fn pressure_line(app: &TopApp, opts: &TopOptions) -> String {
    let ns = app.header_netns;
    match (&app.range, app.pressure) {
        (RangeState::Known(..), Some(p)) => {
            let reserved = match p.reserved {
                0 => String::new(),
                n => format!(", {n} reserved"),
            };
            let mut s = format!(
                "netns {ns} ip_local_port_range {}-{} ({} ports{reserved}): {} free, {} shared by \
                 connect(), {} blocked for connect()",
                p.lo,
                p.hi,
                p.size(),
                p.free,
                p.shared,
                p.blocked
            );
            if let Some(port) = opts.port {
                s.push_str(&format!(
                    " (only port {port} is watched: others count as free)"
                ));
            }
            s
        }
        (RangeState::Failed(e), _) => format!("netns {ns} ip_local_port_range: unavailable ({e})"),
        _ => format!("netns {ns} ip_local_port_range: not read yet"),
    }
}

/// Third header line: sort, filter, counts, and warnings (dropped events, truncation).
pub fn status_line(app: &TopApp) -> String {
    let arrow = if app.reverse { "↓" } else { "↑" };
    let filter = if app.filter.is_empty() {
        "none".to_owned()
    } else {
        format!("\"{}\"", app.filter)
    };
    let mut s = format!(
        "sort: {} {arrow} │ filter: {filter} │ {}/{} buckets │ scans: {}",
        app.sort.label(),
        app.view_len(),
        app.len(),
        app.scans
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    match (app.walk_cost, app.rescan_every) {
        (Some(cost), Some(every)) => s.push_str(&format!(
            " (every {}, {:.1} ms of CPU each)",
            interval(every),
            ms(cost)
        )),
        (Some(cost), None) => s.push_str(&format!(" ({:.1} ms of CPU)", ms(cost))),
        _ => {}
    }
    if app.paused {
        s.push_str(" │ PAUSED");
    }
    if app.dropped > 0 {
        s.push_str(&format!(
            " │ dropped events: {} (rescans correct the table)",
            app.dropped
        ));
    }
    if app.truncated {
        s.push_str(" │ walk truncated: counts are lower bounds");
    }
    if app.incomplete {
        s.push_str(" │ walk incomplete: buckets may be missing");
    }
    s
}

/// Footer text: the keys, or the filter being typed.
pub fn footer_line(app: &TopApp) -> String {
    match &app.input {
        Some(text) => format!("filter (port or netns): {text}█   Enter apply · Esc clear"),
        None => {
            "q quit · s sort · r reverse · / filter · p pause · j/k ↑/↓ PgUp/PgDn scroll".to_owned()
        }
    }
}

/// Splits the screen: header (3 lines), table, transitions pane, footer (1 line).
pub fn areas(area: Rect) -> [Rect; 4] {
    let pane = (area.height / 3).clamp(3, 12);
    Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(4),
        Constraint::Length(pane),
        Constraint::Length(1),
    ])
    .areas(area)
}

/// How many table rows fit in `area` (the whole screen).
pub fn page_size(area: Rect) -> usize {
    // Two border lines and the column header.
    usize::from(areas(area)[1].height.saturating_sub(3)).max(1)
}

const CHANGED: Style = Style::new()
    .fg(Color::Black)
    .bg(Color::Yellow)
    .add_modifier(Modifier::BOLD);
const NEW: Style = Style::new()
    .fg(Color::Black)
    .bg(Color::Green)
    .add_modifier(Modifier::BOLD);

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &TopApp, opts: &TopOptions, now: Instant) {
    let [header, table_area, pane, footer] = areas(frame.area());
    let cols = Columns::for_app(app, opts);

    let warn = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
    let status = status_line(app);
    let status_style = if app.paused || app.dropped > 0 || app.truncated || app.incomplete {
        warn
    } else {
        Style::new()
    };
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(Span::styled(
                title_line(app, opts),
                Style::new().add_modifier(Modifier::BOLD),
            )),
            Line::from(pressure_line(app, opts)),
            Line::from(Span::styled(status, status_style)),
        ]),
        header,
    );

    draw_table(frame, app, &cols, table_area, now);
    draw_pane(frame, app, cols.netns(), pane, now);

    let footer_style = if app.input.is_some() {
        Style::new().fg(Color::Black).bg(Color::Cyan)
    } else {
        Style::new().add_modifier(Modifier::DIM)
    };
    frame.render_widget(
        Paragraph::new(Span::styled(footer_line(app), footer_style)),
        footer,
    );
}

fn draw_table(frame: &mut Frame, app: &TopApp, cols: &Columns, area: Rect, now: Instant) {
    let titles = cols.titles();
    let widths: Vec<Constraint> = cols
        .bucket
        .iter()
        .map(|c| Constraint::Length(c.width()))
        .chain([Constraint::Length(6), Constraint::Min(12)])
        .collect();
    let header = Row::new(titles.iter().map(|t| Cell::from(*t)))
        .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));

    let rows = app.visible().enumerate().map(|(i, row)| {
        let hl = row.highlight(now);
        let cells = cols
            .cells(&row, now)
            .into_iter()
            .enumerate()
            .map(|(i, text)| {
                let style = match cols.bucket.get(i) {
                    Some(c) if hl.new && c.identifies() => NEW,
                    Some(c) if hl.column(*c) => CHANGED,
                    _ => Style::new(),
                };
                Cell::from(text).style(style)
            });
        let r = Row::new(cells);
        if app.offset + i == app.selected {
            r.style(Style::new().add_modifier(Modifier::REVERSED))
        } else {
            r
        }
    });
    let title = format!(" TCP bind buckets ({}) ", app.view_len());
    let block = Block::default().borders(Borders::ALL).title(title);
    let inner = block.inner(area);
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(block)
            .column_spacing(2),
        area,
    );

    if app.view_len() == 0 && inner.height > 1 {
        let msg = if app.scans == 0 {
            "waiting for the first walk…".to_owned()
        } else if app.is_empty() {
            "no TCP bind buckets".to_owned()
        } else {
            format!("no bucket matches filter \"{}\"", app.filter)
        };
        let at = Rect {
            y: inner.y + 1,
            height: 1,
            ..inner
        };
        frame.render_widget(Paragraph::new(msg), at);
    }
}

fn draw_pane(frame: &mut Frame, app: &TopApp, netns: bool, area: Rect, now: Instant) {
    let title = format!(
        " recent transitions ({}/{RECENT_CAPACITY}) ",
        app.recent_len()
    );
    let block = Block::default().borders(Borders::ALL).title(title);
    let height = usize::from(block.inner(area).height);
    let lines: Vec<Line> = app
        .recent()
        .take(height)
        .map(|e| {
            let style = match e.transition.kind {
                TransitionKind::BindFailed | TransitionKind::ConnectFailed => {
                    Style::new().fg(Color::Red)
                }
                TransitionKind::BucketCreated => Style::new().fg(Color::Green),
                TransitionKind::BucketDestroyed => Style::new().add_modifier(Modifier::DIM),
                TransitionKind::FastreuseChanged | TransitionKind::FastreuseportChanged => {
                    Style::new().fg(Color::Yellow)
                }
                _ => Style::new(),
            };
            let text = recent_line(&e.transition, now.saturating_duration_since(e.at), netns);
            Line::from(Span::styled(text, style))
        })
        .collect();
    let lines = if lines.is_empty() {
        vec![Line::from(Span::styled(
            if app.paused {
                "paused"
            } else {
                "no transitions yet"
            },
            Style::new().add_modifier(Modifier::DIM),
        ))]
    } else {
        lines
    };
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

#[cfg(test)]
mod tests {

    use ratatui::{backend::TestBackend, buffer::Buffer, Terminal};

    use super::{
        super::fixtures::{ev, info, key, net, snap},
        *,
    };
    use crate::model::{Errno, Op, Scope, SockOpts, SocketEvent, Task};

    fn opts() -> TopOptions {
        TopOptions {
            netns_label: "4026531840 (self)".into(),
            ..TopOptions::default()
        }
    }
    fn lines(buf: &Buffer) -> Vec<String> {
        let w = usize::from(buf.area.width);
        buf.content()
            .chunks(w)
            .map(|row| row.iter().map(|c| c.symbol()).collect::<String>())
            .collect()
    }
    fn render(
        app: &mut TopApp,
        o: &TopOptions,
        now: Instant,
        w: u16,
        h: u16,
    ) -> Terminal<TestBackend> {
        let mut term = Terminal::new(TestBackend::new(w, h)).expect("terminal");
        app.page = page_size(Rect::new(0, 0, w, h));
        app.refresh_view();
        term.draw(|f| draw(f, app, o, now)).expect("draw");
        term
    }
    fn find(lines: &[String], needle: &str) -> Option<usize> {
        lines.iter().position(|l| l.contains(needle))
    }

    #[test]
    fn renders_header_table_pane_and_footer() {
        let t0 = Instant::now();
        let mut app = TopApp::new(4026531840, "backend: tracepoint (fentry: EPERM)".into());
        app.apply_snapshot(
            snap(&[
                (key(4026531840, 1234), info(0, -1, 1)),
                (key(4026531840, 60000), info(-1, -1, 2)),
            ]),
            Scope::ALL,
            0,
            t0,
        );
        app.set_port_range(RangeState::Known(net(60000, 60000)));
        app.dropped = 3;
        let t1 = t0 + Duration::from_secs(1);
        // A plain bind() with SO_REUSEADDR: one more owner and -1 -> 0; then a bind()
        // that fails.
        let bind = SocketEvent {
            task: Task::Process {
                pid: 77,
                comm: "quiz".into(),
            },
            opts: SockOpts {
                reuseaddr: true,
                ..SockOpts::default()
            },
            ..ev(Op::Bind, key(4026531840, 60000), Some(info(0, -1, 3)))
        };
        app.apply_events(vec![bind.clone()], t1);
        let fail = SocketEvent {
            errno: Errno::new(98),
            ..bind
        };
        app.apply_events(vec![fail], t1);

        let term = render(&mut app, &opts(), t1, 130, 30);
        let buf = term.backend().buffer();
        let l = lines(buf);
        let all = l.join("\n");
        assert!(
            l[0].contains("backend: tracepoint (fentry: EPERM)"),
            "{all}"
        );
        assert!(l[0].contains("netns 4026531840 (self)"), "{all}");
        assert!(
            l[1].contains("ip_local_port_range 60000-60000 (1 ports): 0 free, 0 shared by connect(), 1 blocked for connect()"),
            "{all}"
        );
        assert!(l[2].contains("dropped events: 3"), "{all}");
        assert!(l[2].contains("sort: port ↑"), "{all}");
        let hdr = find(&l, "TCP-PORT").expect("table header");
        assert!(
            l[hdr].contains("FASTREUSE") && l[hdr].contains("#OWNERS") && !l[hdr].contains("NETNS")
        );
        let r1234 = find(&l, "│1234 ").expect("row 1234");
        let r60000 = find(&l, "│60000").expect("row 60000");
        assert!(r1234 < r60000, "sorted by port\n{all}");
        assert!(l[r60000].contains("bind failed EADDRINUSE (quiz)"), "{all}");
        // Pane: newest first, with pid/comm, address and options.
        let p_fail = find(&l, "bind failed EADDRINUSE (quiz)  pid 77").expect("pane failure line");
        let p_change = find(
            &l,
            "fastreuse -1→0 (bind)  pid 77 quiz  127.0.0.1:60000  [REUSEADDR]",
        )
        .expect("pane change line");
        assert!(p_fail < p_change, "{all}");
        assert!(l[29].contains("q quit"), "{all}");

        // The changed cells of 60000 are highlighted, those of 1234 are not.
        let y = r60000 as u16;
        let x_fr = l[hdr]
            .find("FASTREUSE")
            .map(|b| l[hdr][..b].chars().count())
            .expect("col") as u16;
        assert_eq!(buf[(x_fr, y)].bg, Color::Yellow, "fastreuse cell of 60000");
        assert_eq!(buf[(x_fr, r1234 as u16)].bg, Color::Reset);
        // Selected row (first) is reversed.
        assert!(buf[(2, r1234 as u16)].modifier.contains(Modifier::REVERSED));
        // After the highlight window the cell is plain again.
        let term = render(&mut app, &opts(), t1 + Duration::from_secs(5), 130, 30);
        assert_eq!(term.backend().buffer()[(x_fr, y)].bg, Color::Reset);
    }

    #[test]
    fn netns_column_and_filter_prompt_and_messages() {
        let t0 = Instant::now();
        let mut app = TopApp::new(1, "backend: test".into());
        let mut term = render(&mut app, &opts(), t0, 100, 20);
        assert!(find(
            &lines(term.backend().buffer()),
            "waiting for the first walk"
        )
        .is_some());

        app.apply_snapshot(
            snap(&[
                (key(111, 80), info(0, -1, 1)),
                (key(222, 80), info(1, -1, 4)),
            ]),
            Scope::ALL,
            0,
            t0,
        );
        term = render(&mut app, &opts(), t0, 100, 20);
        let l = lines(term.backend().buffer());
        let hdr = find(&l, "TCP-PORT").expect("header");
        assert!(l[hdr].contains("NETNS"), "{}", l.join("\n"));
        assert!(find(&l, "222").is_some());
        assert!(find(&l, "+1").is_some());
        assert!(find(&l, "not read yet").is_some());

        app.handle_key(crossterm::event::KeyEvent::from(
            crossterm::event::KeyCode::Char('/'),
        ));
        app.handle_key(crossterm::event::KeyEvent::from(
            crossterm::event::KeyCode::Char('9'),
        ));
        term = render(&mut app, &opts(), t0, 100, 20);
        let l = lines(term.backend().buffer());
        assert!(
            l[19].contains("filter (port or netns): 9█"),
            "{}",
            l.join("\n")
        );
        app.handle_key(crossterm::event::KeyEvent::from(
            crossterm::event::KeyCode::Enter,
        ));
        term = render(&mut app, &opts(), t0, 100, 20);
        let l = lines(term.backend().buffer());
        assert!(
            find(&l, "no bucket matches filter \"9\"").is_some(),
            "{}",
            l.join("\n")
        );
        assert!(find(&l, "0/2 buckets").is_some());

        app.apply_snapshot(snap(&[]), Scope::ALL, 0, t0);
        app.filter.clear();
        app.handle_key(crossterm::event::KeyEvent::from(
            crossterm::event::KeyCode::Char('s'),
        ));
        term = render(&mut app, &opts(), t0, 100, 20);
        assert!(find(&lines(term.backend().buffer()), "no TCP bind buckets").is_some());
    }

    #[test]
    fn tiny_terminal_does_not_panic() {
        let t0 = Instant::now();
        let mut app = TopApp::new(1, "b".into());
        app.apply_snapshot(snap(&[(key(1, 80), info(0, -1, 1))]), Scope::ALL, 0, t0);
        for (w, h) in [(1, 1), (10, 3), (20, 8), (0, 0)] {
            let _ = render(&mut app, &opts(), t0, w, h);
        }
    }

    #[test]
    fn range_failure_is_shown() {
        let mut app = TopApp::new(9, "b".into());
        app.set_port_range(RangeState::Failed("netns 9 is gone".into()));
        assert_eq!(
            pressure_line(&app, &opts()),
            "netns 9 ip_local_port_range: unavailable (netns 9 is gone)"
        );
        let o = TopOptions {
            port: Some(80),
            ..opts()
        };
        app.set_port_range(RangeState::Known(net(80, 81)));
        assert!(
            pressure_line(&app, &o).ends_with("(only port 80 is watched: others count as free)")
        );
        assert!(title_line(&app, &o).ends_with("│ port 80"));
    }
}
