//! Throttling of failed attempts (SPEC §7.1): per key (an account's email, a device, an actor)
//! a few failures per window, then an exponential lock-out; per client address a cap per minute.
//! Counters live in memory, bounded in size; a throttled attempt is refused before any hash is
//! computed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// The limits of one throttle.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failures allowed per key within `window` seconds before the first lock-out.
    pub per_key: u32,
    /// The window, and the first lock-out, in seconds; each later lock-out doubles, up to a day.
    pub window: i64,
    /// Failures allowed per client address per minute.
    pub per_addr: u32,
}

/// The defaults of SPEC §7.1: 5 per account per 15 minutes, then back-off; 50 per address per minute.
pub const LOGIN: Policy = Policy { per_key: 5, window: 15 * 60, per_addr: 50 };

const MAX_LOCK: i64 = 24 * 3600;
/// Entries kept at most per map (the oldest are dropped first when full).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy, Default)]
struct Strikes {
    count: u32,
    first: i64,
    level: u32,
    locked_until: i64,
    last: i64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Window {
    start: i64,
    count: u32,
}

/// A throttle: per-key strikes and per-address windows.
pub struct Throttle {
    policy: Policy,
    keys: Mutex<HashMap<String, Strikes>>,
    addrs: Mutex<HashMap<IpAddr, Window>>,
}

impl Throttle {
    /// A throttle with `policy`.
    pub fn new(policy: Policy) -> Self {
        Self { policy, keys: Mutex::new(HashMap::new()), addrs: Mutex::new(HashMap::new()) }
    }

    /// `Err(seconds to wait)` when an attempt for `key` from `addr` must be refused now.
    pub fn check(&self, key: &str, addr: Option<IpAddr>, now: i64) -> Result<(), u64> {
        if let (Some(ip), Ok(addrs)) = (addr, self.addrs.lock()) {
            if let Some(w) = addrs.get(&ip) {
                if now < w.start + 60 && w.count >= self.policy.per_addr {
                    return Err((w.start + 60 - now).max(1) as u64);
                }
            }
        }
        if let Ok(keys) = self.keys.lock() {
            if let Some(s) = keys.get(key) {
                if now < s.locked_until {
                    return Err((s.locked_until - now).max(1) as u64);
                }
            }
        }
        Ok(())
    }

    /// Records a failed attempt.
    pub fn fail(&self, key: &str, addr: Option<IpAddr>, now: i64) {
        if let (Some(ip), Ok(mut addrs)) = (addr, self.addrs.lock()) {
            bound(&mut addrs, |w: &Window| w.start);
            let w = addrs.entry(ip).or_default();
            if now >= w.start + 60 {
                *w = Window { start: now, count: 0 };
            }
            w.count = w.count.saturating_add(1);
        }
        if let Ok(mut keys) = self.keys.lock() {
            bound(&mut keys, |s: &Strikes| s.last);
            let p = self.policy;
            let s = keys.entry(key.to_owned()).or_default();
            // A day without failures forgives the back-off.
            if now - s.last > MAX_LOCK {
                *s = Strikes::default();
            }
            if now - s.first > p.window {
                s.first = now;
                s.count = 0;
            }
            s.count = s.count.saturating_add(1);
            s.last = now;
            // After the first lock-out every failure locks again, for twice as long.
            if s.count >= p.per_key || s.level > 0 {
                let lock = p.window.saturating_mul(1 << s.level.min(16)).min(MAX_LOCK);
                s.level = s.level.saturating_add(1);
                s.locked_until = now + lock;
                s.count = 0;
                s.first = now;
            }
        }
    }

    /// Records a success for `key`: its strikes are forgiven.
    pub fn succeed(&self, key: &str) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.remove(key);
        }
    }

    /// Drops entries that no longer limit anything.
    pub fn prune(&self, now: i64) {
        if let Ok(mut addrs) = self.addrs.lock() {
            addrs.retain(|_, w| now < w.start + 60);
        }
        if let Ok(mut keys) = self.keys.lock() {
            keys.retain(|_, s| now < s.locked_until || now - s.last <= MAX_LOCK);
        }
    }
}

/// Keeps a map under `MAX_ENTRIES` by dropping its oldest tenth when full.
fn bound<K: Clone + Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>, age: impl Fn(&V) -> i64) {
    if map.len() < MAX_ENTRIES {
        return;
    }
    let mut ages: Vec<i64> = map.values().map(&age).collect();
    ages.sort_unstable();
    let cut = ages.get(MAX_ENTRIES / 10).copied().unwrap_or(i64::MAX);
    map.retain(|_, v| age(v) > cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_five_then_backs_off() {
        let t = Throttle::new(LOGIN);
        for i in 0..5 {
            assert!(t.check("a", None, 100 + i).is_ok());
            t.fail("a", None, 100 + i);
        }
        assert_eq!(t.check("a", None, 105), Err(900 - 1));
        assert!(t.check("b", None, 105).is_ok());
        assert!(t.check("a", None, 104 + 900).is_ok());
        t.fail("a", None, 104 + 900);
        assert_eq!(t.check("a", None, 104 + 900), Err(1800));
        t.succeed("a");
        assert!(t.check("a", None, 104 + 901).is_ok());
    }

    #[test]
    fn caps_an_address_per_minute() {
        let t = Throttle::new(LOGIN);
        let ip: IpAddr = [127, 0, 0, 2].into();
        for i in 0..50 {
            t.fail(&format!("k{i}"), Some(ip), 10);
        }
        assert_eq!(t.check("fresh", Some(ip), 20), Err(40));
        assert!(t.check("fresh", Some([127, 0, 0, 1].into()), 20).is_ok());
        assert!(t.check("fresh", Some(ip), 70).is_ok());
    }
}
