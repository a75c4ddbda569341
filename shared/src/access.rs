//! Who may call right now, beyond what the token itself says (SECURITY.md, "Revocation" and
//! "Rate limits"):
//!
//! - **Revocation.** A deny-list of subjects, each refused outright or only for tokens issued
//!   before a time. It lives in DynamoDB (one item) and each instance reads it at most once per
//!   `REVOCATION_REFRESH_SECS` (60), so a revocation holds everywhere within a minute.
//! - **Rate limits.** Per user and route class, a token bucket kept in DynamoDB so that it holds
//!   across function instances. It is the generic cell rate algorithm: the bucket is one number,
//!   its theoretical arrival time (`tat`), and taking a token is one conditional write. Each
//!   instance remembers the last `tat` it saw per bucket, which picks the right write first, and
//!   answers a bucket it knows to be empty without writing at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

use crate::auth::Principal;
use crate::error::{ApiError, StoreError};

/// The classes of routes that are limited apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    Uploads,
    Downloads,
    References,
    Maintainer,
}

impl RouteClass {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Uploads => "uploads",
            RouteClass::Downloads => "downloads",
            RouteClass::References => "references",
            RouteClass::Maintainer => "maintainer",
        }
    }
}

/// How one subject is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Revocation {
    /// Every token, whenever issued.
    All,
    /// Tokens issued before this time (seconds since the epoch): the user signs in again.
    IssuedBefore(u64),
}

impl Revocation {
    /// As stored: a number of seconds, `u64::MAX` for every token.
    pub fn as_secs(self) -> u64 {
        match self {
            Revocation::All => u64::MAX,
            Revocation::IssuedBefore(t) => t,
        }
    }

    pub fn from_secs(secs: u64) -> Self {
        if secs == u64::MAX {
            Revocation::All
        } else {
            Revocation::IssuedBefore(secs)
        }
    }

    /// As a command gives it: tokens issued before a time, or (none) every token.
    pub fn issued_before(secs: Option<u64>) -> Self {
        secs.map_or(Revocation::All, Revocation::IssuedBefore)
    }

    pub fn refuses(self, issued_at: u64) -> bool {
        match self {
            Revocation::All => true,
            Revocation::IssuedBefore(t) => issued_at < t,
        }
    }
}

/// Revoked subjects.
pub type DenyList = HashMap<String, Revocation>;

/// A rate: `per_minute` requests a minute on average, at most `burst` at once; 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    pub const UNLIMITED: Rate = Rate { per_minute: 0, burst: 0 };

    /// `N` (N a minute, bursts of N) or `N/B` (N a minute, bursts of B); `0` for no limit.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (rate, burst) = text.split_once('/').unwrap_or((text, text));
        let number = |s: &str| s.trim().parse::<u32>().map_err(|_| format!("{text:?} is not N or N/BURST"));
        let (per_minute, burst) = (number(rate)?, number(burst)?);
        if per_minute > 0 && burst == 0 {
            return Err(format!("{text:?}: a limited rate needs a burst of at least 1"));
        }
        Ok(Rate { per_minute, burst })
    }

    fn unlimited(self) -> bool {
        self.per_minute == 0
    }

    /// Milliseconds one request uses up (the bucket refills one token per interval).
    fn interval_ms(self) -> u64 {
        (60_000 / u64::from(self.per_minute.max(1))).max(1)
    }
}

/// Each route class's rate (`RATE_LIMIT_UPLOADS`, `…_DOWNLOADS`, `…_REFERENCES`, `…_MAINTAINER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub uploads: Rate,
    pub downloads: Rate,
    pub references: Rate,
    pub maintainer: Rate,
}

impl Default for RateLimits {
    /// Sized from what a client does (SECURITY.md): an upload request carries up to 500 files
    /// and a download answer 2,000, so a user syncing a 10,000-file deck needs a few dozen; the
    /// backend's references calls carry 100 changes each for every user at once.
    fn default() -> Self {
        Self {
            uploads: Rate { per_minute: 120, burst: 120 },
            downloads: Rate { per_minute: 240, burst: 240 },
            references: Rate { per_minute: 6000, burst: 6000 },
            maintainer: Rate { per_minute: 600, burst: 600 },
        }
    }
}

impl RateLimits {
    pub fn of(&self, class: RouteClass) -> Rate {
        match class {
            RouteClass::Uploads => self.uploads,
            RouteClass::Downloads => self.downloads,
            RouteClass::References => self.references,
            RouteClass::Maintainer => self.maintainer,
        }
    }
}

/// One conditional write to a bucket's theoretical arrival time (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketWrite {
    /// `tat += by`, if `min <= tat <= max` (the bucket is in use and has a token).
    Advance { by: u64, min: u64, max: u64 },
    /// `tat = to`, if there is none or `tat < before` (the bucket has refilled completely).
    Restart { to: u64, before: u64 },
}

/// What a conditional bucket write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketWritten {
    /// Written; the new time.
    Done(u64),
    /// The condition failed; the time found (none: no bucket).
    Found(Option<u64>),
}

/// The deny-list, stored.
#[async_trait::async_trait]
pub trait RevocationStore: Send + Sync {
    async fn deny_list(&self) -> Result<DenyList, StoreError>;
    async fn revoke(&self, sub: &str, how: Revocation) -> Result<(), StoreError>;
    /// Whether the subject was revoked.
    async fn unrevoke(&self, sub: &str) -> Result<bool, StoreError>;
}

/// Token buckets, stored. `expires_at` (seconds) lets the table's TTL drop an idle bucket.
#[async_trait::async_trait]
pub trait BucketStore: Send + Sync {
    async fn write(&self, key: &str, write: BucketWrite, expires_at: i64) -> Result<BucketWritten, StoreError>;
}

/// Whether a request may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Not before this many milliseconds from now.
    Limited {
        retry_after_ms: u64,
    },
}

/// The most buckets an instance remembers; past it, it forgets them all (a forgotten bucket
/// costs one write more, once).
const MAX_REMEMBERED: usize = 10_000;
/// After a failed read of the deny-list, how long the last one read stands before the next try.
const DENY_LIST_RETRY: time::Duration = time::Duration::seconds(5);

struct Loaded {
    list: Arc<DenyList>,
    /// When to read it again.
    stale_at: OffsetDateTime,
}

/// The checks every authenticated request passes, with their per-instance memory.
pub struct Gate {
    revocations: Arc<dyn RevocationStore>,
    buckets: Arc<dyn BucketStore>,
    limits: RateLimits,
    refresh: time::Duration,
    deny: tokio::sync::Mutex<Option<Loaded>>,
    seen: Mutex<HashMap<String, u64>>,
}

impl Gate {
    pub fn new(
        revocations: Arc<dyn RevocationStore>,
        buckets: Arc<dyn BucketStore>,
        limits: RateLimits,
        refresh_secs: u64,
    ) -> Self {
        Self {
            revocations,
            buckets,
            limits,
            refresh: time::Duration::seconds(i64::try_from(refresh_secs).unwrap_or(60)),
            deny: tokio::sync::Mutex::new(None),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The deny-list's store (the revoke commands write to it).
    pub fn revocations(&self) -> &dyn RevocationStore {
        self.revocations.as_ref()
    }

    /// 401 for a revoked token, 429 `rate_limited` (with `Retry-After`) past the caller's rate.
    pub async fn admit(&self, who: &Principal, class: RouteClass, now: OffsetDateTime) -> Result<(), ApiError> {
        if let Some(how) = self.deny_list(now).await?.get(&who.sub) {
            if how.refuses(who.issued_at) {
                return Err(ApiError::unauthorized("token revoked: sign in again"));
            }
        }
        let key = format!("{}#{}", class.as_str(), who.sub);
        match self.take(&key, self.limits.of(class), now).await? {
            Admission::Admitted => Ok(()),
            Admission::Limited { retry_after_ms } => {
                tracing::info!(sub = %who.sub, class = class.as_str(), retry_after_ms, "rate limited");
                Err(ApiError::rate_limited(retry_after_ms.div_ceil(1000).max(1)))
            }
        }
    }

    /// The deny-list, read again once it is older than the refresh period. A failed read keeps
    /// the last list for a few seconds more (a throttled table must not lock everyone out); with
    /// no list at all the request cannot be checked, and is answered 503.
    async fn deny_list(&self, now: OffsetDateTime) -> Result<Arc<DenyList>, StoreError> {
        let mut loaded = self.deny.lock().await;
        if let Some(l) = loaded.as_ref().filter(|l| now < l.stale_at) {
            return Ok(l.list.clone());
        }
        match self.revocations.deny_list().await {
            Ok(list) => {
                let list = Arc::new(list);
                *loaded = Some(Loaded { list: list.clone(), stale_at: now + self.refresh });
                Ok(list)
            }
            Err(e) => match loaded.as_mut() {
                Some(l) => {
                    tracing::warn!(error = %e, "reading the deny-list failed; the last one read stands");
                    l.stale_at = now + DENY_LIST_RETRY;
                    Ok(l.list.clone())
                }
                None => Err(e),
            },
        }
    }

    /// Take a token from `key`'s bucket: one write, a second only when this instance guessed
    /// the bucket's state wrong, none when it knows the bucket is empty.
    pub async fn take(&self, key: &str, rate: Rate, now: OffsetDateTime) -> Result<Admission, StoreError> {
        if rate.unlimited() {
            return Ok(Admission::Admitted);
        }
        let now_ms = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        let interval = rate.interval_ms();
        // A request is admitted while the arrival time it leaves is within `burst` intervals.
        let latest = now_ms + (u64::from(rate.burst) - 1) * interval;
        let limited = |tat: u64| Admission::Limited { retry_after_ms: tat - latest };
        let seen = self.remembered(key);
        if let Some(tat) = seen.filter(|&t| t > latest) {
            // Other instances only ever move it later: still empty.
            return Ok(limited(tat));
        }
        let advance = BucketWrite::Advance { by: interval, min: now_ms, max: latest };
        let restart = BucketWrite::Restart { to: now_ms + interval, before: now_ms };
        let first = if seen.is_some_and(|t| t >= now_ms) { advance } else { restart };
        let expires_at = (now_ms / 1000 + u64::from(rate.burst) * interval / 1000 + 3600) as i64;
        let found = match self.buckets.write(key, first, expires_at).await? {
            BucketWritten::Done(tat) => return Ok(self.admitted(key, tat)),
            BucketWritten::Found(found) => found,
        };
        let second = match found {
            Some(tat) if tat > latest => {
                self.remember(key, tat);
                return Ok(limited(tat));
            }
            Some(tat) if tat >= now_ms => advance,
            _ => restart,
        };
        if second == first {
            // Another instance moved the bucket between our write and its answer: one more
            // request from this user is now ahead of ours; say so rather than loop.
            return Ok(Admission::Limited { retry_after_ms: interval });
        }
        match self.buckets.write(key, second, expires_at).await? {
            BucketWritten::Done(tat) => Ok(self.admitted(key, tat)),
            BucketWritten::Found(found) => {
                let tat = found.unwrap_or(now_ms);
                self.remember(key, tat);
                Ok(Admission::Limited { retry_after_ms: tat.saturating_sub(latest).max(interval) })
            }
        }
    }

    fn admitted(&self, key: &str, tat: u64) -> Admission {
        self.remember(key, tat);
        Admission::Admitted
    }

    fn remembered(&self, key: &str) -> Option<u64> {
        self.seen.lock().ok()?.get(key).copied()
    }

    fn remember(&self, key: &str, tat: u64) {
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() >= MAX_REMEMBERED && !seen.contains_key(key) {
                seen.clear();
            }
            seen.insert(key.to_string(), tat);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn at(ms: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(1_800_000_000_000_000_000 + i128::from(ms) * 1_000_000).unwrap()
    }

    fn gate(store: &Arc<MemoryStore>, limits: RateLimits) -> Gate {
        Gate::new(store.clone(), store.clone(), limits, 60)
    }

    fn principal(sub: &str, issued_at: u64) -> Principal {
        Principal::for_tests(sub, "upload download", issued_at)
    }

    #[test]
    fn rates_parse_or_name_the_problem() {
        assert_eq!(Rate::parse("120").unwrap(), Rate { per_minute: 120, burst: 120 });
        assert_eq!(Rate::parse("60/10").unwrap(), Rate { per_minute: 60, burst: 10 });
        assert_eq!(Rate::parse("0").unwrap(), Rate::UNLIMITED);
        for bad in ["", "x", "-1", "10/0", "10/", "1.5"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    /// A burst is admitted up to its size, then refused with the wait until the next token, and
    /// admitted again once that wait has passed; the bucket refills at the rate, never past it.
    #[tokio::test]
    async fn a_bucket_admits_its_burst_then_its_rate() {
        let store = Arc::new(MemoryStore::default());
        let g = gate(&store, RateLimits::default());
        let rate = Rate { per_minute: 60, burst: 5 };
        for i in 0..5 {
            assert_eq!(g.take("k", rate, at(i)).await.unwrap(), Admission::Admitted, "request {i}");
        }
        let Admission::Limited { retry_after_ms } = g.take("k", rate, at(5)).await.unwrap() else {
            panic!("the sixth request of a burst of five is refused")
        };
        assert!((990..=1000).contains(&retry_after_ms), "{retry_after_ms}");
        assert!(matches!(g.take("k", rate, at(500)).await.unwrap(), Admission::Limited { .. }));
        assert_eq!(g.take("k", rate, at(5 + retry_after_ms as i64)).await.unwrap(), Admission::Admitted);
        // Another key, another bucket.
        assert_eq!(g.take("other", rate, at(6)).await.unwrap(), Admission::Admitted);
        // An hour idle refills the bucket to its burst, not beyond.
        let later = 3_600_000;
        for i in 0..5 {
            assert_eq!(g.take("k", rate, at(later + i)).await.unwrap(), Admission::Admitted);
        }
        assert!(matches!(g.take("k", rate, at(later + 5)).await.unwrap(), Admission::Limited { .. }));
        assert_eq!(g.take("k", Rate::UNLIMITED, at(later + 6)).await.unwrap(), Admission::Admitted);
    }

    /// Instances share the bucket: what one takes, the other cannot; each write that guessed
    /// wrong costs one more write, never more.
    #[tokio::test]
    async fn instances_share_one_bucket() {
        let store = Arc::new(MemoryStore::default());
        let (a, b) = (gate(&store, RateLimits::default()), gate(&store, RateLimits::default()));
        let rate = Rate { per_minute: 600, burst: 10 };
        let mut admitted = 0;
        for i in 0..40 {
            let g = if i % 3 == 0 { &a } else { &b };
            if g.take("k", rate, at(i)).await.unwrap() == Admission::Admitted {
                admitted += 1;
            }
        }
        // 40 ms at 10 a second adds no token to the burst of ten.
        assert_eq!(admitted, 10);
        let writes = store.bucket_writes();
        assert!(writes <= 40 + 2 * 2, "{writes} writes for 40 requests");
    }

    /// A revoked subject is refused within the refresh period on an instance that had read the
    /// list before; a revocation by time refuses only older tokens; restoring lets them in.
    #[tokio::test]
    async fn revocations_hold_within_a_minute() {
        let store = Arc::new(MemoryStore::default());
        let g = gate(&store, RateLimits::default());
        let t0 = at(0);
        let issued = t0.unix_timestamp() as u64;
        let user = principal("mallory", issued);
        g.admit(&user, RouteClass::Uploads, t0).await.unwrap();
        store.revoke("mallory", Revocation::All).await.unwrap();
        // Read a moment ago: the old list stands until it is a minute old.
        g.admit(&user, RouteClass::Uploads, at(59_000)).await.unwrap();
        let e = g.admit(&user, RouteClass::Downloads, at(60_000)).await.unwrap_err();
        assert_eq!((e.status, e.code), (401, "unauthorized"));
        assert!(e.message.contains("revoked"), "{e}");
        assert!(g.admit(&principal("alice", issued), RouteClass::Uploads, at(60_000)).await.is_ok());

        store.revoke("mallory", Revocation::IssuedBefore(issued + 10)).await.unwrap();
        let fresh = principal("mallory", issued + 10);
        assert!(g.admit(&user, RouteClass::Uploads, at(121_000)).await.is_err(), "an older token");
        assert!(g.admit(&fresh, RouteClass::Uploads, at(121_000)).await.is_ok(), "signed in again");
        assert!(store.unrevoke("mallory").await.unwrap());
        assert!(!store.unrevoke("mallory").await.unwrap());
        assert!(g.admit(&user, RouteClass::Uploads, at(182_000)).await.is_ok());
    }

    /// A rate past its burst answers 429 `rate_limited` with a whole number of seconds to wait.
    #[tokio::test]
    async fn the_answer_past_the_limit_is_429_with_retry_after() {
        let store = Arc::new(MemoryStore::default());
        let limits = RateLimits { uploads: Rate { per_minute: 2, burst: 1 }, ..RateLimits::default() };
        let g = gate(&store, limits);
        let user = principal("u", at(0).unix_timestamp() as u64);
        g.admit(&user, RouteClass::Uploads, at(0)).await.unwrap();
        let e = g.admit(&user, RouteClass::Uploads, at(1)).await.unwrap_err();
        assert_eq!((e.status, e.code, e.retry_after), (429, "rate_limited", Some(30)));
        assert!(g.admit(&user, RouteClass::Downloads, at(2)).await.is_ok(), "another class, another bucket");
        assert!(g.admit(&user, RouteClass::Uploads, at(30_000)).await.is_ok());
    }
}
