//! Each dated row of the variant table, observed on the running kernel: one small
//! experiment per row in a private network namespace whose outcome differs with and
//! without the change. Stable and vendor kernels take changes as backports, so the release
//! number alone cannot say which rows hold; the experiment can. Needs root; touches
//! nothing outside the namespaces it creates.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Serialize;
use socket2::SockAddr;

use super::{
    lab::{errno, Lab, LabError, Recipe, Role},
    variant::{KernelVersion, Variant},
};

/// The port the experiments bind (each in its own namespace).
const PORT: u16 = 7100;
/// The port the connect() experiment's range is narrowed to.
const CONNECT_PORT: u16 = 41000;

fn recipe(addr: &str, reuseaddr: bool, v6only: bool, role: Role) -> Recipe {
    Recipe {
        addr: addr.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        reuseaddr,
        reuseport: false,
        uid: 0,
        v6only,
        role,
    }
}

/// Makes `owner` in a fresh namespace, then binds a plain socket to `cand:PORT`: true when
/// the kernel refuses it with `EADDRINUSE`.
fn refused_after(owner: Recipe, cand: &str) -> Result<bool, LabError> {
    let mut lab = Lab::new()?;
    if lab.realize(owner, PORT)?.is_none() {
        return Err(LabError::Setup(format!(
            "the owner {} could not bind",
            owner.describe()
        )));
    }
    let addr: IpAddr = cand
        .parse()
        .map_err(|_| LabError::Setup(format!("bad address {cand}")))?;
    let s = lab.socket(addr, false, false, 0, false)?;
    match Lab::bind(&s, addr, PORT) {
        Ok(()) => Ok(false),
        Err(e) if errno(&e) == libc::EADDRINUSE => Ok(true),
        Err(e) => Err(LabError::Io {
            what: format!("binding {cand}:{PORT}"),
            source: e,
        }),
    }
}

/// `bhash2_bind`: an IPv6 socket bound to `::` and connected to `::1` keeps `IPV6_V6ONLY`
/// off and the IPv4 shadow address 127.0.0.6. Comparing every owner with
/// `inet_rcv_saddr_equal()` finds it from a bind() of 127.0.0.6; the per-address buckets
/// of 6.1+ do not.
fn per_address_buckets() -> Result<bool, LabError> {
    let mut lab = Lab::new()?;
    let i = lab
        .realize(recipe("::", false, false, Role::Connected), PORT)?
        .ok_or_else(|| LabError::Setup("binding [::] failed".into()))?;
    let o = lab.held()[i].owner;
    if o.sock.local.0 != IpAddr::V6(Ipv6Addr::LOCALHOST) || o.sock.opts.v6only {
        return Err(LabError::Setup(format!(
            "the connected [::] socket came out as {o:?}"
        )));
    }
    let shadow = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6));
    let s = lab.socket(shadow, false, false, 0, false)?;
    match Lab::bind(&s, shadow, PORT) {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == libc::EADDRINUSE => Ok(false),
        Err(e) => Err(LabError::Io {
            what: format!("binding 127.0.0.6:{PORT}"),
            source: e,
        }),
    }
}

/// `first_owner_sets_fastreuse`: the first owner binds with `SO_REUSEADDR` and clears it
/// afterwards. A bucket left at +1 lets a second `SO_REUSEADDR` bind through its fast path;
/// a bucket at 0 sends it to the conflict check, which refuses it.
fn first_owner_sets_fastreuse() -> Result<bool, LabError> {
    let lab = Lab::new()?;
    let a: IpAddr = Ipv4Addr::LOCALHOST.into();
    let first = lab.socket(a, true, false, 0, false)?;
    Lab::bind(&first, a, PORT).map_err(|e| LabError::Io {
        what: "binding the first owner".into(),
        source: e,
    })?;
    first.set_reuse_address(false).map_err(|e| LabError::Io {
        what: "clearing SO_REUSEADDR".into(),
        source: e,
    })?;
    let second = lab.socket(a, true, false, 0, false)?;
    match Lab::bind(&second, a, PORT) {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == libc::EADDRINUSE => Ok(false),
        Err(e) => Err(LabError::Io {
            what: "binding the second owner".into(),
            source: e,
        }),
    }
}

/// `release_resets_bucket`: connect() takes the port, a bind() of another address joins
/// (the bucket leaves -1/-1) and closes again. A kernel that resets the bucket on release
/// lets the next connect() share the port.
fn release_resets_bucket() -> Result<bool, LabError> {
    let lab = Lab::new()?;
    let _server = lab.listener(Ipv4Addr::UNSPECIFIED.into(), 5000)?;
    lab.ns.set_port_range(CONNECT_PORT, CONNECT_PORT)?;
    let first = lab.connect_socket(Ipv4Addr::LOCALHOST.into(), None)?;
    let dst = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 5000);
    first
        .connect(&SockAddr::from(dst))
        .map_err(|e| LabError::Io {
            what: format!("connect to {dst}"),
            source: e,
        })?;
    let other: IpAddr = Ipv4Addr::new(127, 0, 0, 2).into();
    let bound = lab.socket(other, false, false, 0, false)?;
    Lab::bind(&bound, other, CONNECT_PORT).map_err(|e| LabError::Io {
        what: format!("binding 127.0.0.2:{CONNECT_PORT}"),
        source: e,
    })?;
    drop(bound);
    let second = lab.connect_socket(Ipv4Addr::LOCALHOST.into(), None)?;
    let dst2 = SocketAddr::new(other, 5000);
    match second.connect(&SockAddr::from(dst2)) {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == libc::EADDRNOTAVAIL => Ok(false),
        Err(e) => Err(LabError::Io {
            what: format!("connect to {dst2}"),
            source: e,
        }),
    }
}

/// One switch of [`Variant`] as observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Observation {
    /// The switch (and row) name.
    pub row: &'static str,
    /// The switch's value by experiment.
    pub observed: bool,
    /// Its value by the release number (the table's expectation).
    pub expected: bool,
}

/// The running kernel's variant: the release number's rows, each replaced by what its
/// experiment shows. Rows about the per-address buckets are only observed where those
/// buckets exist.
pub fn observe(version: KernelVersion) -> Result<(Variant, Vec<Observation>), LabError> {
    let expected = Variant::for_version(version);
    let mut v = expected;
    let mut seen = Vec::new();
    let mut note = |row: &'static str, observed: bool, expected: bool| {
        seen.push(Observation {
            row,
            observed,
            expected,
        });
        observed
    };
    v.bhash2_bind = note("bhash2_bind", per_address_buckets()?, expected.bhash2_bind);
    if v.bhash2_bind {
        let tw = refused_after(
            recipe("127.0.0.1", false, false, Role::TimeWait),
            "127.0.0.1",
        )?;
        v.bhash2_timewait = note("bhash2_timewait", tw, expected.bhash2_timewait);
        let v6only = !refused_after(recipe("::", false, true, Role::Bound), "127.0.0.1")?;
        v.bhash2_v6only_owner = note("bhash2_v6only_owner", v6only, expected.bhash2_v6only_owner);
        // A bucket made by an IPv6 socket on ::ffff:0.0.0.0 is a wildcard bucket for a
        // v4-mapped bind only where buckets have no family.
        let mapped = refused_after(
            recipe("::ffff:0.0.0.0", false, false, Role::Bound),
            "::ffff:127.0.0.1",
        )?;
        v.bind2_no_family = note("bind2_no_family", mapped, expected.bind2_no_family);
    }
    v.first_owner_sets_fastreuse = note(
        "first_owner_sets_fastreuse",
        first_owner_sets_fastreuse()?,
        expected.first_owner_sets_fastreuse,
    );
    v.release_resets_bucket = note(
        "release_resets_bucket",
        release_resets_bucket()?,
        expected.release_resets_bucket,
    );
    Ok((v, seen))
}
