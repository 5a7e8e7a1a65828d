//! Throttling of failed attempts (SPEC §7.1): per key (an account's email, a device, an actor)
//! a few failures per window, then an exponential lock-out; per client address a cap per minute.
//! Counters live in memory (bounded in size), or in the store when replicas share it; a throttled attempt is refused before any hash is
//! computed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::store::Db;

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

/// The failures counted for one key (an account, a device, an actor) — or, for an address,
/// its window (`first`, `count`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Strikes {
    pub count: u32,
    pub first: i64,
    pub level: u32,
    pub locked_until: i64,
    pub last: i64,
}

impl Strikes {
    /// These strikes after one more failure at `now`.
    fn fail(mut self, p: Policy, now: i64) -> Self {
        // A day without failures forgives the back-off.
        if now - self.last > MAX_LOCK {
            self = Strikes::default();
        }
        if now - self.first > p.window {
            self.first = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.last = now;
        // After the first lock-out every failure locks again, for twice as long.
        if self.count >= p.per_key || self.level > 0 {
            let lock = p.window.saturating_mul(1 << self.level.min(16)).min(MAX_LOCK);
            self.level = self.level.saturating_add(1);
            self.locked_until = now + lock;
            self.count = 0;
            self.first = now;
        }
        self
    }

    /// An address window after one more failure at `now`.
    fn fail_window(mut self, now: i64) -> Self {
        if now >= self.first + 60 {
            self = Strikes { first: now, last: now, ..Strikes::default() };
        }
        self.count = self.count.saturating_add(1);
        self.last = now;
        self
    }

    /// Seconds to wait, for a key.
    fn wait(&self, now: i64) -> Option<u64> {
        (now < self.locked_until).then(|| (self.locked_until - now).max(1) as u64)
    }

    /// Seconds to wait, for an address window.
    fn wait_window(&self, p: Policy, now: i64) -> Option<u64> {
        (now < self.first + 60 && self.count >= p.per_addr).then(|| (self.first + 60 - now).max(1) as u64)
    }
}

/// A throttle: per-key strikes and per-address windows, in this process or — with replicas —
/// in the shared store (`throttle` rows, keyed `key` and `addr:<scope>:<ip>`).
pub struct Throttle {
    policy: Policy,
    scope: &'static str,
    shared: Option<Db>,
    keys: Mutex<HashMap<String, Strikes>>,
    addrs: Mutex<HashMap<IpAddr, Strikes>>,
}

impl Throttle {
    /// A throttle with `policy`, counting in memory.
    pub fn new(policy: Policy) -> Self {
        Self { policy, scope: "", shared: None, keys: Mutex::new(HashMap::new()), addrs: Mutex::new(HashMap::new()) }
    }

    /// A throttle with `policy` counting in a store shared by replicas (`scope` names its
    /// address windows).
    pub fn shared(policy: Policy, scope: &'static str, db: Db) -> Self {
        Self { shared: Some(db), scope, ..Self::new(policy) }
    }

    fn addr_key(&self, ip: IpAddr) -> String {
        format!("addr:{}:{ip}", self.scope)
    }

    /// `Err(seconds to wait)` when an attempt for `key` from `addr` must be refused now.
    /// Blocking with a shared store; a store that cannot answer refuses for a second.
    pub fn check(&self, key: &str, addr: Option<IpAddr>, now: i64) -> Result<(), u64> {
        let p = self.policy;
        if let Some(db) = &self.shared {
            let akey = addr.map(|ip| self.addr_key(ip));
            let mut keys = vec![key];
            keys.extend(akey.as_deref());
            let rows = db.strikes_of(&keys).map_err(|e| {
                tracing::warn!("throttle: {e}");
                1u64
            })?;
            for (k, s) in rows {
                let wait = if k == key { s.wait(now) } else { s.wait_window(p, now) };
                if let Some(w) = wait {
                    return Err(w);
                }
            }
            return Ok(());
        }
        if let (Some(ip), Ok(addrs)) = (addr, self.addrs.lock()) {
            if let Some(w) = addrs.get(&ip).and_then(|w| w.wait_window(p, now)) {
                return Err(w);
            }
        }
        if let Ok(keys) = self.keys.lock() {
            if let Some(w) = keys.get(key).and_then(|s| s.wait(now)) {
                return Err(w);
            }
        }
        Ok(())
    }

    /// Records a failed attempt (blocking with a shared store).
    pub fn fail(&self, key: &str, addr: Option<IpAddr>, now: i64) {
        let p = self.policy;
        if let Some(db) = &self.shared {
            if let Some(ip) = addr {
                if let Err(e) = db.strike(&self.addr_key(ip), &|s| s.fail_window(now)) {
                    tracing::warn!("throttle: {e}");
                }
            }
            if let Err(e) = db.strike(key, &|s| s.fail(p, now)) {
                tracing::warn!("throttle: {e}");
            }
            return;
        }
        if let (Some(ip), Ok(mut addrs)) = (addr, self.addrs.lock()) {
            bound(&mut addrs, |w: &Strikes| w.first);
            let w = addrs.entry(ip).or_default();
            *w = w.fail_window(now);
        }
        if let Ok(mut keys) = self.keys.lock() {
            bound(&mut keys, |s: &Strikes| s.last);
            let s = keys.entry(key.to_owned()).or_default();
            *s = s.fail(p, now);
        }
    }

    /// Records a success for `key`: its strikes are forgiven (blocking with a shared store).
    pub fn succeed(&self, key: &str) {
        if let Some(db) = &self.shared {
            if let Err(e) = db.forgive(key) {
                tracing::warn!("throttle: {e}");
            }
            return;
        }
        if let Ok(mut keys) = self.keys.lock() {
            keys.remove(key);
        }
    }

    /// Drops entries that no longer limit anything (the shared store prunes with retention).
    pub fn prune(&self, now: i64) {
        if let Ok(mut addrs) = self.addrs.lock() {
            addrs.retain(|_, w| now < w.first + 60);
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
