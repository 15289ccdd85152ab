//! Errno on the wire.

/// Host errno to the Linux number 9P2000.L carries (QEMU's `errno_to_dotl`).
/// coro9p runs on Linux hosts, where this is the identity.
pub fn errno_to_dotl(errno: i32) -> u32 {
    errno as u32
}

/// The host C library's message for `errno`, as QEMU's `strerror` puts it in
/// a 9P2000.u Rerror ("No such file or directory").
pub fn strerror(errno: i32) -> String {
    // std formats an OS error with the C library's strerror_r text followed
    // by " (os error N)"; keep the text.
    let full = std::io::Error::from_raw_os_error(errno).to_string();
    match full.rfind(" (os error ") {
        Some(cut) => full[..cut].to_string(),
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strerror_is_the_c_library_text() {
        assert_eq!(strerror(2), "No such file or directory");
        assert_eq!(strerror(95), "Operation not supported");
        assert_eq!(strerror(90), "Message too long");
    }
}
