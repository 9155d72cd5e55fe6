//! Terminal and signal guards for `portwatch top`.
//!
//! [`TerminalGuard`] switches to raw mode and the alternate screen and restores the
//! terminal when dropped, when the program panics (a panic hook chained before the
//! previous one) and, through the run loop, on SIGTERM/SIGINT/SIGHUP: [`SignalGuard`]
//! installs handlers that only set an atomic flag the loop watches.

use std::{
    io::{self, Write},
    sync::{
        atomic::{AtomicBool, Ordering},
        Once,
    },
};

use crossterm::{cursor, execute, terminal};

/// Terminal set-up failures.
#[derive(Debug, thiserror::Error)]
pub enum TermError {
    #[error(
        "cannot switch the terminal to raw mode: {0} (stdout must be a terminal for the live \
         view; use --once, or pipe the output, for a plain table)"
    )]
    RawMode(#[source] io::Error),
    #[error("cannot enter the terminal's alternate screen: {0} (try --once for a plain table)")]
    AlternateScreen(#[source] io::Error),
    #[error("cannot install a handler for signal {signal}: {source}")]
    Signal {
        signal: i32,
        #[source]
        source: io::Error,
    },
}

/// Whether the terminal is currently in our raw/alternate mode (the panic hook and the
/// guard both restore it; whichever runs first does the work).
static ACTIVE: AtomicBool = AtomicBool::new(false);
static PANIC_HOOK: Once = Once::new();

/// Leaves the alternate screen, shows the cursor and leaves raw mode, if we entered them.
pub fn restore_terminal() -> io::Result<()> {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return Ok(());
    }
    let mut out = io::stdout();
    let screen = execute!(out, terminal::LeaveAlternateScreen, cursor::Show);
    let raw = terminal::disable_raw_mode();
    let _ = out.flush();
    screen.and(raw)
}

fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Restore first so the panic message lands on a sane screen.
            let _ = restore_terminal();
            previous(info);
        }));
    });
}

/// Raw mode + alternate screen + hidden cursor while alive.
#[derive(Debug)]
pub struct TerminalGuard {
    _private: (),
}

impl TerminalGuard {
    pub fn enter() -> Result<TerminalGuard, TermError> {
        install_panic_hook();
        terminal::enable_raw_mode().map_err(TermError::RawMode)?;
        ACTIVE.store(true, Ordering::SeqCst);
        let guard = TerminalGuard { _private: () };
        // On error the guard's Drop undoes raw mode.
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)
            .map_err(TermError::AlternateScreen)?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        if let Err(e) = restore_terminal() {
            eprintln!("portwatch: could not restore the terminal: {e} (run `reset` to fix it)");
        }
    }
}

/// Set by the signal handlers; the run loops poll it.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

/// The signals that end `top`: SIGTERM, SIGINT (in raw mode Ctrl-C arrives as a key,
/// but `kill -INT` still arrives as a signal) and SIGHUP (terminal gone).
pub const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Handlers for [`STOP_SIGNALS`] that set a flag; the previous dispositions come back on
/// drop.
pub struct SignalGuard {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl std::fmt::Debug for SignalGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let signals: Vec<_> = self.previous.iter().map(|(s, _)| *s).collect();
        f.debug_struct("SignalGuard")
            .field("signals", &signals)
            .finish()
    }
}

impl SignalGuard {
    pub fn install() -> Result<SignalGuard, TermError> {
        STOP.store(false, Ordering::SeqCst);
        let mut guard = SignalGuard {
            previous: Vec::with_capacity(STOP_SIGNALS.len()),
        };
        for &signal in &STOP_SIGNALS {
            // SAFETY: an all-zero `sigaction` is a valid value (empty mask, no flags); we
            // fill in the handler before use.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            // SAFETY: `action.sa_mask` is a valid, writable sigset_t.
            unsafe { libc::sigemptyset(&mut action.sa_mask) };
            // SAFETY: as above, zeroed sigaction is valid; the kernel writes the old one.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers are valid for the call; the handler only touches an
            // atomic, which is async-signal-safe.
            let rc = unsafe { libc::sigaction(signal, &action, &mut old) };
            if rc != 0 {
                // Dropping `guard` restores the ones already installed.
                return Err(TermError::Signal {
                    signal,
                    source: io::Error::last_os_error(),
                });
            }
            guard.previous.push((signal, old));
        }
        Ok(guard)
    }

    /// The flag the handlers set.
    pub fn flag(&self) -> &'static AtomicBool {
        &STOP
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (signal, old) in self.previous.drain(..).rev() {
            // SAFETY: `old` is the disposition the kernel returned for this signal.
            unsafe { libc::sigaction(signal, &old, std::ptr::null_mut()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_is_a_no_op_when_not_active() {
        assert!(restore_terminal().is_ok());
    }

    #[test]
    fn sigterm_sets_the_flag_and_drop_restores_the_old_handler() {
        // SAFETY: query-only call (null new action) with a valid out pointer.
        let before = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old);
            old.sa_sigaction
        };
        {
            let guard = SignalGuard::install().expect("install");
            assert!(!guard.flag().load(Ordering::SeqCst));
            // SAFETY: raising a signal whose handler we just installed (it only sets STOP).
            unsafe { libc::raise(libc::SIGHUP) };
            assert!(guard.flag().load(Ordering::SeqCst));
        }
        // SAFETY: as above.
        let after = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old);
            old.sa_sigaction
        };
        assert_eq!(before, after);
    }
}
