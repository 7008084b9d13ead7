use super::*;

fn q(s: Option<u32>, m: Option<u32>, d: Option<u32>) -> Quotas {
    Quotas {
        per_second: s.and_then(NonZeroU32::new),
        per_minute: m.and_then(NonZeroU32::new),
        per_day: d.and_then(NonZeroU32::new),
    }
}

const GUARD: Duration = Duration::from_millis(10);

fn ask(priority: Priority, counted: bool) -> Ask {
    Ask {
        priority,
        counted,
        paid: false,
        again: false,
    }
}

const LOW: Ask = Ask {
    priority: Priority::Low,
    counted: true,
    paid: false,
    again: false,
};

fn period_of(quotas: &Quotas, guard: Duration) -> Option<Duration> {
    tightest(quotas, guard).map(|(period, _)| period)
}

#[test]
fn the_tightest_window_sets_the_pace() {
    let enterprise = period_of(&q(Some(17), Some(1000), Some(50_000)), GUARD).unwrap();
    assert_eq!(enterprise, Duration::from_millis(60_010) / 1000);
    let per_second = period_of(&q(Some(20), None, None), GUARD).unwrap();
    assert_eq!(per_second, Duration::from_millis(1010) / 20);
    assert_eq!(period_of(&q(None, None, Some(5)), GUARD), None);
}

fn gate(quotas: Quotas) -> Gate {
    gate_with(quotas, Vec::new(), None)
}

fn settings(quotas: Quotas, concurrency: usize, give_up_after: Duration) -> GateSettings {
    GateSettings {
        quotas,
        guard: GUARD,
        concurrency,
        give_up_after,
    }
}

fn gate_with(quotas: Quotas, used: Vec<(i64, u64)>, usage: Option<UsageSink>) -> Gate {
    Gate::new(&settings(quotas, 16, Duration::from_secs(60)), used, usage)
}

/// Any `limit + 1` consecutive grants span more than the window: no window, wherever its
/// edges fall, sees more than `limit`. Slowness can only widen the spans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_window_ever_holds_more_than_its_limit() {
    let limit = 20usize;
    let gate = gate(q(Some(limit as u32), None, None));
    let mut times = Vec::new();
    for _ in 0..45 {
        let mut g = gate.acquire(LOW).await.unwrap();
        assert!(g.until_slot().await);
        times.push(std::time::Instant::now());
        g.report(Signal::Answered(Hints::default()));
    }
    let window = Duration::from_secs(1);
    for w in times.windows(limit + 1) {
        assert!(w[limit] - w[0] > window, "{:?}", w[limit] - w[0]);
    }
}

/// The first two requests of a run are a full period apart: a fresh limiter lets no
/// burst through, which a zero-burst limiter would answer with a 429.
#[tokio::test]
async fn the_pacing_starts_without_a_burst() {
    let gate = gate(q(Some(20), None, None));
    let mut sent = Vec::new();
    for _ in 0..3 {
        let mut g = gate.acquire(LOW).await.unwrap();
        assert!(g.until_slot().await);
        sent.push(std::time::Instant::now());
        drop(g);
    }
    for w in sent.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(50),
            "{:?}",
            w[1] - w[0]
        );
    }
}

/// A paid request is granted ahead of its slot, to record its intent, and released when
/// its slot comes; one released too late gives the slot up.
#[tokio::test]
async fn a_paid_request_is_granted_ahead_and_released_at_its_slot() {
    let recorded = Arc::new(Mutex::new(0));
    let r = recorded.clone();
    let gate = gate_with(
        q(Some(10), None, Some(3)),
        Vec::new(),
        Some(Box::new(move |_| *lock(&r) += 1)),
    );
    gate.committed_in(Duration::from_millis(20));
    let paid = Ask { paid: true, ..LOW };
    drop(gate.acquire(paid).await.unwrap());
    let (g, waited) = leaving(&gate, paid).await;
    assert!(
        waited >= Duration::from_millis(20),
        "released at its slot: {waited:?}"
    );
    drop(g);
    assert_eq!(*lock(&recorded), 1, "used as it left, not when granted");
    let mut late = gate.acquire(paid).await.unwrap();
    let next = {
        let gate = gate.clone();
        tokio::spawn(async move { gate.acquire(paid).await })
    };
    let slot = late.slot.expect("a counted grant has a slot");
    tokio::time::sleep(slot.saturating_sub(mono_now()) + LATE * 5).await;
    assert!(!late.until_slot().await, "a slot passed is given up");
    drop(late);
    assert_eq!(
        *lock(&recorded),
        1,
        "a request that did not leave is not used"
    );
    let mut again = next
        .await
        .unwrap()
        .expect("the full day waits for the reservation that may come back");
    if !again.until_slot().await {
        drop(again);
        drop(leaving(&gate, paid).await);
    }
    assert_eq!(
        *lock(&recorded),
        2,
        "the day's third request is the one given up, taken back"
    );
}

/// Alone on its account, a paid request is granted a period ahead of its slot, as the one
/// before it leaves, so that the grant loop wakes once a slot; its intent is still to be
/// committed only the commit's time (with room to spare) before the slot.
#[tokio::test]
async fn alone_a_paid_request_is_granted_a_period_ahead_and_commits_late() {
    let gate = gate(q(Some(10), None, None));
    gate.committed_in(Duration::from_millis(4));
    let paid = Ask { paid: true, ..LOW };
    drop(leaving(&gate, paid).await);
    let g = gate.acquire(paid).await.unwrap();
    let (to_slot, to_commit) = (
        g.slot.unwrap().saturating_sub(mono_now()),
        g.commit_by()
            .saturating_duration_since(std::time::Instant::now()),
    );
    let period = lock(&gate.inner.state).pacer.period();
    assert!(
        to_slot > period / 2,
        "granted about a period ({period:?}) ahead: {to_slot:?}"
    );
    let lead = to_slot - to_commit;
    assert!(
        lead >= Duration::from_millis(6) && lead <= Duration::from_millis(8),
        "committed 4 ms x 1.5 + 1 ms before its slot: {lead:?}"
    );
}

/// A request that left late (a busy runtime polled its task after its slot) would leave the
/// next one less than a period behind it, which a zero-burst limiter refuses: the next one
/// waits until a period after it, less the slack for the timer's rounding.
#[tokio::test]
async fn a_late_departure_keeps_the_next_one_a_period_behind() {
    let gate = gate(q(Some(10), None, None));
    leaving(&gate, LOW).await;
    let period = lock(&gate.inner.state).control.period();
    let left = mono_now() + period / 2;
    lock(&gate.inner.state).pacer.departed(left);
    leaving(&gate, LOW).await;
    assert!(
        mono_now() + DEPARTURE_SLACK >= left + period,
        "left {:?} after the late one, the period is {period:?}",
        mono_now().saturating_sub(left)
    );
}

/// A wait between polls ([`Gate::after`]) ends with the grant loop's next slot when that
/// comes soon after it, so that it wakes the runtime no extra time; on time when none comes;
/// at once when the gate closes.
#[tokio::test]
async fn a_wait_ends_with_the_next_slot_or_on_time() {
    let gate = gate(q(Some(10), None, None));
    let started = std::time::Instant::now();
    gate.after(Duration::from_millis(30)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(30) && waited < Duration::from_millis(30) + COALESCE / 2,
        "with no slot to come it ends on time: {waited:?}"
    );

    drop(gate.acquire(LOW).await.unwrap());
    let next = {
        let gate = gate.clone();
        tokio::spawn(async move {
            let g = gate.acquire(LOW).await.unwrap();
            (std::time::Instant::now(), g)
        })
    };
    let period = lock(&gate.inner.state).pacer.period();
    let wait = period.saturating_sub(COALESCE / 3);
    let started = std::time::Instant::now();
    gate.after(wait).await;
    let ended = std::time::Instant::now();
    let (granted, _g) = next.await.unwrap();
    assert!(
        ended - started >= wait,
        "it ends once its time passed: {:?} of {wait:?}",
        ended - started
    );
    assert!(
        granted.max(ended) - granted.min(ended) < Duration::from_millis(5),
        "it ends with the next slot, a period on, which comes within {COALESCE:?} of its \
         time: {:?} apart",
        granted.max(ended) - granted.min(ended)
    );

    let waiting = gate.after(Duration::from_secs(60));
    gate.close();
    let ended = tokio::time::timeout(Duration::from_secs(5), waiting).await;
    assert!(ended.is_ok(), "it ends when the gate closes");
}

/// The grant of a request that leaves, asked for again while a loaded machine releases it
/// after its slot, as the client does; and how long the one that left waited for its slot.
async fn leaving(gate: &Gate, ask: Ask) -> (Grant, Duration) {
    loop {
        let mut g = gate.acquire(ask).await.unwrap();
        let granted = std::time::Instant::now();
        if g.until_slot().await {
            return (g, granted.elapsed());
        }
    }
}

fn hints(retry_after_ms: Option<u64>, remaining: Option<u64>, reset_s: Option<u64>) -> Hints {
    Hints {
        retry_after: retry_after_ms.map(Duration::from_millis),
        remaining,
        reset: reset_s.map(Duration::from_secs),
        ..Hints::default()
    }
}

fn fast() -> Quotas {
    q(Some(1000), None, None)
}

/// At a configured quota, one 429 is a pacing miss: the margin widens and nobody waits. A
/// run of them means the provider refuses everything: then everyone waits.
#[tokio::test]
async fn a_single_429_widens_the_margin_and_a_run_of_them_holds_everyone() {
    let gate = gate(q(Some(100), None, None));
    for _ in 0..30 {
        gate.acquire(LOW)
            .await
            .unwrap()
            .report(Signal::Answered(Hints::default()));
    }
    let before = gate.margin().unwrap();
    let g = gate.acquire(LOW).await.unwrap();
    assert_eq!(
        g.report(Signal::RateLimited(Hints::default())),
        Some(Refusal::Miss)
    );
    assert!(gate.margin().unwrap() < before, "the margin widened");
    let started = Instant::now();
    drop(gate.acquire(LOW).await.unwrap());
    assert!(started.elapsed() < Duration::from_millis(100), "no pause");
    let mut last = None;
    for _ in 0..REFUSALS_IN_A_ROW {
        let g = gate.acquire(LOW).await.unwrap();
        last = g.report(Signal::RateLimited(Hints::default()));
    }
    assert_eq!(last, Some(Refusal::Held));
    assert!(lock(&gate.inner.state).control.paused_until.is_some());
}

/// Over a zero-burst limiter every other request is refused, and a gateway answers the 429s
/// at once, before the admitted requests between them: those 429s are misses the margin reads,
/// not a run that holds everyone. A run is of requests granted one after the other.
#[tokio::test]
async fn fast_429s_between_admitted_requests_make_no_run() {
    let gate = gate(q(Some(100), None, None));
    let mut granted = Vec::new();
    for _ in 0..8 {
        granted.push(gate.acquire(LOW).await.unwrap());
    }
    let mut admitted = Vec::new();
    for (i, g) in granted.into_iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(
                g.report(Signal::RateLimited(Hints::default())),
                Some(Refusal::Miss),
                "429 to grant {i}"
            );
        } else {
            admitted.push(g);
        }
    }
    assert!(lock(&gate.inner.state).control.paused_until.is_none());
    for g in admitted {
        g.report(Signal::Answered(Hints::default()));
    }
    let mut run = Vec::new();
    for _ in 0..REFUSALS_IN_A_ROW + 3 {
        run.push(gate.acquire(LOW).await.unwrap());
    }
    let last = run
        .into_iter()
        .map(|g| g.report(Signal::RateLimited(Hints::default())))
        .last()
        .flatten();
    assert_eq!(last, Some(Refusal::Held), "granted in a row, all refused");
    assert_eq!(
        lock(&gate.inner.state).control.holds,
        1,
        "the 429s to requests granted before the pause do not lengthen it"
    );
}

#[tokio::test]
async fn polls_go_before_submissions_and_a_429_holds_everyone_for_its_retry_after() {
    let gate = gate(fast());
    let started = Instant::now();
    let g = gate.acquire(LOW).await.unwrap();
    assert_eq!(
        g.report(Signal::RateLimited(hints(Some(300), None, None))),
        Some(Refusal::Held)
    );
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (name, prio) in [
        ("low1", Priority::Low),
        ("low2", Priority::Low),
        ("high", Priority::High),
    ] {
        let (g, o) = (gate.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let grant = g.acquire(ask(prio, true)).await.unwrap();
            lock(&o).push((name, Instant::now()));
            grant.report(Signal::Answered(Hints::default()));
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let order = lock(&order);
    let names: Vec<_> = order.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["high", "low1", "low2"]);
    assert!(order[0].1 - started >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_window_announced_as_used_up_pauses_until_its_reset_unless_the_reset_is_short() {
    let gate = gate(fast());
    let started = Instant::now();
    let g = gate.acquire(LOW).await.unwrap();
    g.report(Signal::Answered(hints(None, Some(0), Some(1))));
    let g = gate.acquire(LOW).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "short reset"
    );
    g.report(Signal::Answered(hints(None, Some(0), Some(2))));
    let g = gate.acquire(LOW).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2));
    g.report(Signal::RateLimited(hints(None, Some(0), Some(1))));
    let before = Instant::now();
    drop(gate.acquire(LOW).await.unwrap());
    assert!(
        before.elapsed() >= Duration::from_millis(900),
        "a 429 waits out any reset"
    );
}

#[tokio::test]
async fn the_day_window_remembers_earlier_runs_and_refuses_when_spent() {
    let now = unix_minute();
    let used = vec![(now - DAY_MINUTES, 50), (now - 30, 2)];
    let recorded = Arc::new(Mutex::new(0));
    let r = recorded.clone();
    let gate = gate_with(
        q(None, None, Some(4)),
        used,
        Some(Box::new(move |_| *lock(&r) += 1)),
    );
    for a in [LOW, ask(Priority::High, true)] {
        assert!(gate.acquire(a).await.unwrap().until_slot().await);
    }
    assert_eq!(
        gate.acquire(ask(Priority::High, true)).await.err(),
        Some(GateError::DayExhausted)
    );
    assert_eq!(gate.refusal(), Some(GateError::DayExhausted));
    assert_eq!(gate.acquire(LOW).await.err(), Some(GateError::DayExhausted));
    assert!(
        gate.acquire(ask(Priority::High, false)).await.is_ok(),
        "what the provider does not count still goes"
    );
    assert_eq!(*lock(&recorded), 2);
}

/// What other runs on the account spend counts too, from when it is heard of; minutes of
/// theirs older than a day drop out like this run's own.
#[tokio::test]
async fn requests_spent_elsewhere_count_against_the_day() {
    let now = unix_minute();
    let gate = gate_with(q(None, None, Some(5)), vec![(now - 1, 1)], None);
    gate.spent_elsewhere(&[(now - DAY_MINUTES, 40), (now - 2, 2), (now, 1)]);
    drop(gate.acquire(LOW).await.unwrap());
    assert_eq!(
        gate.acquire(LOW).await.err(),
        Some(GateError::DayExhausted),
        "1 earlier + 3 elsewhere + 1 now spend the 5"
    );
}

#[tokio::test]
async fn a_not_today_answer_spends_the_day() {
    let gate = gate(fast());
    let g = gate.acquire(LOW).await.unwrap();
    g.report(Signal::RateLimited(Hints {
        retry_after: Some(crate::quota::hints::LONGEST_WAIT),
        beyond_reach: true,
        ..Hints::default()
    }));
    assert_eq!(gate.refusal(), Some(GateError::DayExhausted));
    gate.exhaust();
    assert_eq!(
        gate.acquire(ask(Priority::High, true)).await.err(),
        Some(GateError::DayExhausted)
    );
}

#[tokio::test]
async fn at_most_the_concurrency_is_in_flight() {
    let gate = Gate::new(
        &settings(fast(), 2, Duration::from_secs(60)),
        Vec::new(),
        None,
    );
    let a = gate.acquire(LOW).await.unwrap();
    let b = gate.acquire(LOW).await.unwrap();
    let g = gate.clone();
    let third = tokio::spawn(async move { g.acquire(LOW).await.is_ok() });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!third.is_finished());
    a.report(Signal::Answered(Hints::default()));
    assert!(third.await.unwrap());
    // A timeout halves the concurrency: with two in flight of a limit now 1, none goes.
    b.report(Signal::Failed { timeout: true });
    let c = gate.acquire(LOW).await.unwrap();
    let g = gate.clone();
    let fourth = tokio::spawn(async move { g.acquire(LOW).await.is_ok() });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!fourth.is_finished(), "limit 1 after the timeout");
    drop(c);
    assert!(fourth.await.unwrap());
}

#[tokio::test]
async fn a_failing_provider_trips_the_breaker_which_probes_then_gives_up() {
    let gate = Gate::new(
        &settings(fast(), 16, Duration::from_millis(3500)),
        Vec::new(),
        None,
    );
    let started = Instant::now();
    let mut grants = Vec::new();
    for _ in 0..10 {
        grants.push(gate.acquire(LOW).await.unwrap());
    }
    for g in grants {
        g.report(Signal::Failed { timeout: false });
    }
    // Open: nothing for a second, then one probe at a time; each failed probe waits longer.
    let mut probes = Vec::new();
    loop {
        match gate.acquire(ask(Priority::High, false)).await {
            Ok(g) => {
                probes.push(started.elapsed());
                g.report(Signal::Failed { timeout: false });
            }
            Err(e) => {
                assert_eq!(e, GateError::ProviderDown);
                break;
            }
        }
    }
    assert_eq!(probes.len(), 2, "{probes:?}");
    assert!(probes[0] >= Duration::from_secs(1), "{probes:?}");
    assert!(
        probes[1] - probes[0] >= Duration::from_secs(2),
        "{probes:?}"
    );
    assert_eq!(gate.refusal(), Some(GateError::ProviderDown));
    assert_eq!(gate.acquire(LOW).await.err(), Some(GateError::ProviderDown));
}

#[tokio::test]
async fn an_unknown_quota_is_learned_from_a_published_policy() {
    assert_eq!(gate(fast()).adaptive_rate(), None, "known quotas are paced");
    let gate = gate(q(None, None, None));
    assert_eq!(gate.adaptive_rate(), Some(2.0));
    let g = gate.acquire(LOW).await.unwrap();
    g.report(Signal::Answered(Hints {
        policy: Some(crate::quota::hints::Policy {
            quota: 600,
            window: Duration::from_secs(60),
        }),
        ..Hints::default()
    }));
    assert_eq!(gate.adaptive_rate(), Some(10.0));
}

#[tokio::test]
async fn closing_refuses_waiters() {
    let gate = gate(fast());
    let g = gate.acquire(LOW).await.unwrap();
    g.report(Signal::RateLimited(hints(Some(60_000), None, None)));
    let g = gate.clone();
    let waiter = tokio::spawn(async move { g.acquire(LOW).await.err() });
    tokio::time::sleep(Duration::from_millis(20)).await;
    gate.close();
    let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
    assert_eq!(got.unwrap().unwrap(), Some(GateError::Closed));
}

#[tokio::test]
async fn the_summary_says_when_the_provider_admitted_well_below_the_config() {
    let gate = gate(q(Some(25), None, None));
    assert_eq!(gate.pace_note(), None);
    for _ in 0..12 {
        let g = gate.acquire(LOW).await.unwrap();
        g.report(Signal::RateLimited(Hints::default()));
        let g = gate.acquire(LOW).await.unwrap();
        g.report(Signal::Answered(Hints::default()));
    }
    let note = gate.pace_note().expect("a note");
    assert!(note.starts_with("the provider admitted about "), "{note}");
    assert!(note.ends_with(" of the 25/s configured"), "{note}");
}
