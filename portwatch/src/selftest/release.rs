//! What a port release does to a bucket whose remaining owners are all connect()-bound:
//! since "tcp: Update bind bucket state on port release" (d57f4b874946, 6.18, row
//! `connect-bind` of the compatibility table) the bucket returns to -1/-1 and connect()
//! may share the port again; before, it keeps the state the bind() gave it until it is
//! destroyed. Each kernel is checked against what its own BTF says it does; what it did
//! is recorded as an observation.
use super::{addr, observation, scenario, tcp, ScenarioResult};
use crate::{
    model::{Errno, Fastreuse, TransitionKind as K},
    observer::SessionObserver,
};

const PORT: u16 = 60000;

/// s1 connect()s and takes the only ephemeral port (bucket -1/-1), s2 bind()s another
/// address on it (0/0), s2 closes, s3 connect()s to another remote.
pub fn port_release_reset(obs: &mut SessionObserver<'_>, resets: bool) -> ScenarioResult {
    scenario(obs, "port_release_reset", (PORT, PORT), &[PORT], |ns, c| {
        let l = tcp(ns)?;
        l.bind(&addr("0.0.0.0:1234"))?;
        l.listen(128)?;
        let s1 = tcp(ns)?;
        s1.connect(&addr("127.8.8.8:1234"))?;
        c.collect()?;
        let s2 = tcp(ns)?;
        s2.bind(&addr("127.0.0.2:60000"))?;
        c.collect()?;
        drop(s2);
        c.collect()?;
        let after_release = c.last_state(PORT);
        let s3 = tcp(ns)?;
        let r = s3.connect(&addr("127.9.9.9:1234"));
        c.collect()?;
        let reconnect = match &r {
            Ok(()) => "connect() reused the port".to_owned(),
            Err(e) => format!("connect() failed: {}", Errno::of_io(e)),
        };
        // Closing s1 and s3 leaves TIME-WAIT sockets on the port: the scenario ends here.
        drop((s3, s1, l));

        let common = [
            K::BucketCreated,
            K::OwnerAdded,
            K::FastreuseChanged,
            K::FastreuseportChanged,
            K::OwnerRemoved,
        ];
        if resets {
            let mut want = common.to_vec();
            want.extend([K::FastreuseChanged, K::FastreuseportChanged, K::OwnerAdded]);
            c.expect_kinds(PORT, &want);
            c.check(
                after_release == Some((Fastreuse(-1), Fastreuse(-1))),
                format!(
                    "this kernel resets a bucket left to connect()-bound owners (BTF has \
                     tw_connect_bind): expected -1/-1 after the release, saw {after_release:?}"
                ),
            );
            c.check(
                r.is_ok(),
                format!("connect() must share the reset bucket, got {r:?}"),
            );
        } else {
            let mut want = common.to_vec();
            want.push(K::ConnectFailed);
            c.expect_kinds(PORT, &want);
            c.check(
                after_release == Some((Fastreuse(0), Fastreuse(0))),
                format!(
                    "this kernel keeps a bucket's state until it is destroyed (BTF has no \
                     tw_connect_bind): expected 0/0 after the release, saw {after_release:?}"
                ),
            );
            c.check(
                r.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::EADDRNOTAVAIL),
                format!("connect() must find no port (bucket 0/0), got {r:?}"),
            );
        }
        // How each socket got its port, where the kernel records it.
        let bound = |kind: K| {
            c.seen
                .iter()
                .find(|t| t.key.port == PORT && t.kind == kind)
                .map(|t| t.opts.connect_bound)
        };
        let (by_connect, by_bind) = (bound(K::BucketCreated), bound(K::FastreuseChanged));
        let want = |v: bool| Some(resets.then_some(v));
        c.check(
            by_connect == want(true) && by_bind == want(false),
            format!(
                "connect()-bound mark: s1 (connect) {by_connect:?}, s2 (bind) {by_bind:?}; \
                 expected {:?} and {:?}",
                want(true),
                want(false)
            ),
        );
        let state = |s: Option<(Fastreuse, Fastreuse)>| {
            s.map_or_else(|| "no bucket".to_owned(), |(a, b)| format!("{a}/{b}"))
        };
        Ok(vec![
            (observation::RELEASE.to_owned(), state(after_release)),
            (observation::RECONNECT.to_owned(), reconnect),
        ])
    })
}
