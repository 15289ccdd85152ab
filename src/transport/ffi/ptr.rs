//! The one place where pointers from C become references: every exported
//! function and every callback result goes through these checks (NULL,
//! alignment, length overflow) before it is dereferenced.

use std::ffi::{c_char, c_int, CStr};

use super::fail;

/// `p` as a shared reference.
///
/// # Safety
///
/// If `p` is neither NULL nor misaligned, it must point to a live,
/// initialised `T` that nothing mutates for `'a`.
pub(super) unsafe fn to_ref<'a, T>(p: *const T, what: &str) -> Result<&'a T, c_int> {
    check(p, what)?;
    // SAFETY: checked non-NULL and aligned above; the caller vouches that it
    // points to a live T for 'a (the contract of the exported function).
    Ok(unsafe { &*p })
}

/// `p` as an exclusive reference.
///
/// # Safety
///
/// If `p` is neither NULL nor misaligned, it must point to a live `T` that
/// nothing else reads or writes for `'a`.
pub(super) unsafe fn to_mut<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T, c_int> {
    check(p, what)?;
    // SAFETY: checked non-NULL and aligned above; the caller vouches that it
    // points to a live T it lends us exclusively for 'a.
    Ok(unsafe { &mut *p })
}

/// `n` elements at `p` as a slice (`n == 0` needs no pointer).
///
/// # Safety
///
/// If the checks pass, `p` must point to `n` live, initialised `T`s that
/// nothing mutates for `'a`.
pub(super) unsafe fn to_slice<'a, T>(p: *const T, n: usize, what: &str) -> Result<&'a [T], c_int> {
    if n == 0 {
        return Ok(&[]);
    }
    check(p, what)?;
    match n.checked_mul(std::mem::size_of::<T>()) {
        Some(bytes) if bytes <= isize::MAX as usize => {}
        _ => return Err(fail(libc::EINVAL, format!("{what}: {n} elements overflow"))),
    }
    // SAFETY: non-NULL, aligned, and n * size_of::<T>() fits isize (checked
    // above); the caller vouches for n live elements for 'a.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// A NUL-terminated UTF-8 string.
///
/// # Safety
///
/// If `p` is not NULL it must point to a NUL-terminated string that stays
/// unchanged for `'a`.
pub(super) unsafe fn to_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, c_int> {
    check(p, what)?;
    // SAFETY: non-NULL (checked); the caller vouches for the terminating NUL
    // and that the bytes stay unchanged for 'a.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map_err(|_| fail(libc::EINVAL, format!("{what} is not UTF-8")))
}

fn check<T>(p: *const T, what: &str) -> Result<(), c_int> {
    if p.is_null() {
        return Err(fail(libc::EINVAL, format!("{what} is NULL")));
    }
    if !p.is_aligned() {
        return Err(fail(libc::EINVAL, format!("{what} ({p:p}) is misaligned")));
    }
    Ok(())
}
