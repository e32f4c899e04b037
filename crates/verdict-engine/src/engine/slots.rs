//! Contiguous slot ranges of a pool (the prompt pool of segmented attention: each distinct
//! prompt's keys and values held once, for as long as a sample still reads them). First
//! fit over a sorted free list; a freed range merges with its free neighbours, so a pool
//! that empties is one range again. Pure bookkeeping, tested on its own.

#[derive(Debug, Clone)]
pub struct Slots {
    capacity: usize,
    /// Free ranges (start, len), sorted by start, never adjacent.
    free: Vec<(usize, usize)>,
}

impl Slots {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, free: if capacity > 0 { vec![(0, capacity)] } else { vec![] } }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Slots not allocated.
    pub fn free_slots(&self) -> usize {
        self.free.iter().map(|&(_, l)| l).sum()
    }

    /// The longest range an `alloc` can return now.
    pub fn largest_free(&self) -> usize {
        self.free.iter().map(|&(_, l)| l).max().unwrap_or(0)
    }

    /// The start of `len` free slots (the first range that holds them), or `None` if no free
    /// range is that long.
    pub fn alloc(&mut self, len: usize) -> Option<usize> {
        let i = self.free.iter().position(|&(_, l)| l >= len)?;
        let (start, l) = self.free[i];
        if l == len {
            self.free.remove(i);
        } else {
            self.free[i] = (start + len, l - len);
        }
        Some(start)
    }

    /// Give back `len` slots from `start` (a range `alloc` returned).
    pub fn release(&mut self, start: usize, len: usize) {
        if len == 0 {
            return;
        }
        debug_assert!(start + len <= self.capacity, "range {start}+{len} outside the pool of {}", self.capacity);
        let i = self.free.partition_point(|&(s, _)| s < start);
        debug_assert!(i == 0 || self.free[i - 1].0 + self.free[i - 1].1 <= start, "range {start}+{len} freed twice");
        self.free.insert(i, (start, len));
        // Merge with the next range, then with the previous one.
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_and_merging_neighbours() {
        let mut s = Slots::new(100);
        let a = s.alloc(30).unwrap();
        let b = s.alloc(30).unwrap();
        let c = s.alloc(30).unwrap();
        assert_eq!((a, b, c), (0, 30, 60));
        assert_eq!(s.alloc(11), None, "10 slots left");
        s.release(b, 30);
        assert_eq!((s.free_slots(), s.largest_free()), (40, 30));
        assert_eq!(s.alloc(20), Some(30), "the first range that fits");
        s.release(a, 30);
        s.release(30, 20);
        assert_eq!(s.largest_free(), 60, "freed neighbours merged");
        s.release(c, 30);
        assert_eq!((s.free_slots(), s.largest_free()), (100, 100), "an empty pool is one range again");
        assert_eq!(s.alloc(100), Some(0));
        assert_eq!(s.alloc(1), None);
    }

    #[test]
    fn any_order_of_releases_leaves_one_range() {
        // Every order of freeing five ranges ends with the whole pool free in one piece.
        let orders = [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3], [1, 3, 0, 4, 2]];
        for order in orders {
            let mut s = Slots::new(50);
            let starts: Vec<usize> = (0..5).map(|_| s.alloc(10).unwrap()).collect();
            for i in order {
                s.release(starts[i], 10);
            }
            assert_eq!((s.free_slots(), s.largest_free()), (50, 50), "order {order:?}");
        }
    }
}
