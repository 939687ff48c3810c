//! Page-range arithmetic: the ranges the engines advise, unmark and
//! exclude. Pure.


/// A page-aligned address range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: usize,
    pub end: usize,
}

impl Range {
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// The smallest page-aligned range covering `[addr, addr + len)`, so that
    /// every page holding any of those bytes is included (what an exclusion
    /// of a secret needs). `None` on address overflow.
    pub fn covering(addr: usize, len: usize, page: usize) -> Option<Range> {
        let end = addr.checked_add(len)?.checked_add(page - 1)? & !(page - 1);
        Some(Range {
            start: addr & !(page - 1),
            end,
        })
    }

    pub fn overlaps(&self, other: &Range) -> bool {
        self.start < other.end && other.start < self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_rounds_outwards() {
        assert_eq!(
            Range::covering(4097, 10, 4096),
            Some(Range {
                start: 4096,
                end: 8192
            })
        );
        assert_eq!(
            Range::covering(4096, 4096, 4096),
            Some(Range {
                start: 4096,
                end: 8192
            })
        );
        assert_eq!(
            Range::covering(4000, 200, 4096),
            Some(Range {
                start: 0,
                end: 8192
            })
        );
        assert_eq!(Range::covering(usize::MAX - 10, 100, 4096), None);
    }
}
