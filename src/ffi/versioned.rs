//! Reading a caller's versioned struct (one that starts with `struct_size`)
//! whatever version of it the caller was compiled with.

use std::mem::MaybeUninit;

use crate::error::{Error, Result};

/// Copies `*ptr`, a struct of type `T` as the caller knows it: the caller's
/// `struct_size` bytes, the rest zero (each member's default) when the
/// caller's struct is older and smaller. A size below `min_size` (the first
/// version's) is `EINVAL`, as is one that cuts a member of `members`
/// (offset, size) in two; a larger struct is accepted when every byte this
/// library does not know is zero (else `E2BIG`).
///
/// # Safety
///
/// `ptr` must be non-NULL and point to `struct_size` readable bytes (the
/// first member is a `size_t`), and all-zero bytes must be a valid `T`.
pub(crate) unsafe fn read<T: Copy>(
    ptr: *const T,
    min_size: usize,
    members: &[(usize, usize)],
    what: &str,
) -> Result<T> {
    let known = size_of::<T>();
    // SAFETY: the caller passes at least the first member, a size_t.
    let size = unsafe { ptr.cast::<usize>().read_unaligned() };
    let cut = members
        .iter()
        .any(|&(at, len)| at < size && size < at + len);
    if size < min_size.max(size_of::<usize>()) || cut {
        return Err(Error::invalid(format!(
            "{what}->struct_size is {size}, not the size of any version of the struct"
        )));
    }
    if size > known {
        // SAFETY: the caller promises `size` readable bytes.
        let unknown =
            unsafe { std::slice::from_raw_parts(ptr.cast::<u8>().add(known), size - known) };
        if unknown.iter().any(|b| *b != 0) {
            return Err(Error::new(
                libc::E2BIG,
                format!(
                    "{what} has members this library does not know (struct_size {size} is larger than {known} and they are not zero)"
                ),
            ));
        }
    }
    let mut out = MaybeUninit::<T>::zeroed();
    // SAFETY: `size.min(known)` bytes are readable at `ptr` and writable in
    // `out`; they do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            ptr.cast::<u8>(),
            out.as_mut_ptr().cast::<u8>(),
            size.min(known),
        );
    }
    // SAFETY: every byte is either the caller's (a valid member value, as no
    // member is cut) or zero, which the caller promises is valid for `T`.
    Ok(unsafe { out.assume_init() })
}
