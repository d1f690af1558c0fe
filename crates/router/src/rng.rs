//! A small per-thread pseudo-random source for balancing (not for anything secret).

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    // std's RandomState is seeded from the OS; hashing anything yields a random 64-bit value.
    RandomState::new().hash_one(0x6b75_6d6f_u64) | 1
}

/// The next pseudo-random 64 bits of this thread (xorshift64*).
pub(crate) fn next_u64() -> u64 {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// A uniformly distributed number in `0..n` (0 when `n` is 0).
pub(crate) fn below(n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    // Lemire's multiply-shift: unbiased enough for load balancing.
    ((u128::from(next_u64()) * n as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    #[test]
    fn covers_the_range() {
        let mut seen = [0usize; 3];
        for _ in 0..3000 {
            seen[super::below(3)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
        assert_eq!(super::below(0), 0);
    }
}
