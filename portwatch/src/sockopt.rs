//! Socket options socket2 does not offer, set on the sockets the quizzes, `explain` and
//! its kernel-judged cases make.
use std::{io, os::fd::AsRawFd as _};

use socket2::Socket;

/// `IP_BIND_ADDRESS_NO_PORT`: a bind() to port 0 takes no port until connect() picks
/// one for the 4-tuple.
pub fn set_bind_address_no_port(s: &Socket) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads size_of::<c_int>() bytes from `one`, a live local; the
    // descriptor is borrowed from `s`, open for the call.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
