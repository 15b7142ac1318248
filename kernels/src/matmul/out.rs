//! [`DisjointOut`]: a matmul's output shared by its parallel work items, each of which
//! writes its own rectangle of it.

/// The output `y` of one matmul (f32 values, or the next product's quantized bytes), shared
/// by its work items, each of which writes a distinct rectangle of it (so no two items touch
/// the same value).
#[derive(Clone, Copy)]
pub(super) struct DisjointOut<T = f32> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: the items only write disjoint ranges (see `write` and `slice_mut`), and `y`
// outlives the parallel loop (it stays borrowed mutably by the function that made this view
// until its parallel region ends).
unsafe impl<T: Send> Sync for DisjointOut<T> {}

impl<T: Copy> DisjointOut<T> {
    /// A view of `y` for the work items. From then on `y` is written only through it, until
    /// the caller's parallel region ends.
    pub(super) fn new(y: &mut [T]) -> Self {
        DisjointOut {
            ptr: y.as_mut_ptr(),
            len: y.len(),
        }
    }

    /// Copies `vals` to `y[at .. at + vals.len()]`.
    ///
    /// # Safety
    /// No other thread reads or writes that range concurrently.
    pub(super) unsafe fn write(&self, at: usize, vals: &[T]) {
        // SAFETY: exclusive (guaranteed by the caller); `slice_mut` checks the range.
        unsafe { self.slice_mut(at, vals.len()) }.copy_from_slice(vals);
    }

    /// `y[at .. at + len]` as a mutable slice.
    ///
    /// # Safety
    /// No other thread reads or writes that range while the slice lives.
    pub(super) unsafe fn slice_mut<'s>(&self, at: usize, len: usize) -> &'s mut [T] {
        assert!(at + len <= self.len, "output range out of bounds");
        // SAFETY: in bounds (checked above), `y` outlives the parallel loop, and exclusive
        // (guaranteed by the caller).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at), len) }
    }
}

impl DisjointOut<f32> {
    /// The rectangle of token lines `t0 .. t0 + tokens` × values `r0 .. r0 + rows` of `y`
    /// (`[_, stride]`), as a panel kernel's output.
    ///
    /// # Safety
    /// No other thread reads or writes the rectangle while the returned value lives.
    pub(super) unsafe fn rect<'s>(
        &self,
        stride: usize,
        t0: usize,
        tokens: usize,
        r0: usize,
        rows: usize,
    ) -> crate::panel::PanelOut<'s> {
        assert!(
            tokens > 0 && r0 + rows <= stride && (t0 + tokens) * stride <= self.len,
            "output rectangle out of bounds"
        );
        // SAFETY: every line `t0 + t` (t < tokens) holds values r0 .. r0 + rows inside `y`
        // (checked above); `y` outlives the parallel loop; exclusive by the caller.
        unsafe {
            crate::panel::PanelOut::from_raw_parts(
                self.ptr.add(t0 * stride + r0),
                stride,
                tokens,
                rows,
            )
        }
    }
}
