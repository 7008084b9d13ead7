use std::sync::{Arc, Mutex};

use super::*;

/// How a simulated server counts its `limit` a second.
#[derive(Debug, Clone, Copy)]
enum Counting {
    /// A fixed one-second window.
    Fixed,
    /// A zero-burst GCRA on a millisecond clock (nginx's `limit_req` without `burst`).
    Gcra,
}

/// A server counting `limit` requests a second, answering after `latency` (its 429s at once
/// when `quick_429s`, as a gateway does), driven by the controller for `secs` seconds in 1 ms
/// steps. Returns the accepted count per second and the number of 429s.
fn simulate(
    counting: Counting,
    limit: u64,
    latency: Duration,
    quick_429s: bool,
    secs: u64,
) -> (Vec<u64>, u64) {
    let start = Instant::now();
    let mut rate = Rate::new(start, 10_000.0);
    let mut next_grant = start;
    let mut in_flight: Vec<(Instant, Instant, bool)> = Vec::new();
    let mut window = (0u64, 0u64);
    let mut tat_ms = 0u64;
    let period_ms = 1000 / limit;
    let mut accepted = vec![0u64; secs as usize];
    let mut refused = 0;
    for ms in 0..secs * 1000 {
        let now = start + Duration::from_millis(ms);
        let (due, waiting): (Vec<_>, Vec<_>) =
            in_flight.into_iter().partition(|(_, at, _)| *at <= now);
        in_flight = waiting;
        for (granted, _, ok) in due {
            if ok {
                rate.answered(now, granted, true);
            } else {
                rate.refused(now, granted);
            }
        }
        while next_grant <= now {
            let second = ms / 1000;
            let ok = match counting {
                Counting::Fixed => {
                    if window.0 != second {
                        window = (second, 0);
                    }
                    let ok = window.1 < limit;
                    window.1 += u64::from(ok);
                    ok
                }
                Counting::Gcra => {
                    let ok = ms >= tat_ms;
                    if ok {
                        tat_ms = ms + period_ms;
                    }
                    ok
                }
            };
            if ok {
                accepted[second as usize] += 1;
            } else {
                refused += 1;
            }
            rate.granted(now);
            let answer_at = if ok || !quick_429s {
                now + latency
            } else {
                now
            };
            in_flight.push((now, answer_at, ok));
            next_grant += rate.period();
        }
    }
    (accepted, refused)
}

#[test]
fn converges_near_an_unknown_limit_with_few_refusals() {
    let cases = [
        (20, 300),
        (5, 300),
        (100, 50),
        (17, 1000),
        (50, 300),
        (20, 100),
    ];
    let ways = [
        (Counting::Fixed, false),
        (Counting::Fixed, true),
        (Counting::Gcra, true),
    ];
    for ((limit, latency_ms), (counting, quick_429s)) in
        cases.into_iter().flat_map(|c| ways.map(|w| (c, w)))
    {
        let latency = Duration::from_millis(latency_ms);
        let (accepted, refused) = simulate(counting, limit, latency, quick_429s, 120);
        eprintln!("{counting:?} {limit} {latency_ms} {quick_429s}: {accepted:?} refused {refused}");
        let first_near = accepted
            .iter()
            .position(|&n| n as f64 >= 0.9 * limit as f64)
            .unwrap();
        assert!(first_near < 20, "{counting:?} {limit}/s: {accepted:?}");
        let tail = &accepted[30..];
        let share = tail.iter().sum::<u64>() as f64 / (tail.len() as u64 * limit) as f64;
        let total: u64 = accepted.iter().sum();
        let refused_share = refused as f64 / (total + refused) as f64;
        assert!(
            share >= 0.95,
            "{counting:?} {limit}/s: utilisation {share}: {accepted:?}"
        );
        assert!(
            refused_share <= 0.015,
            "{counting:?} {limit}/s: 429 share {refused_share} ({refused} of {})",
            total + refused
        );
    }
}

#[test]
fn one_decrease_per_round_trip_and_idle_time_is_no_evidence() {
    let t0 = Instant::now();
    let mut r = Rate::new(t0, 1000.0);
    let t1 = t0 + Duration::from_secs(1);
    r.answered(t1, t1, false);
    assert_eq!(r.rate(), INITIAL_RATE, "not backlogged: no increase");
    let t2 = t0 + Duration::from_secs(2);
    r.answered(t2, t2, true);
    assert_eq!(
        r.rate(),
        2.0 * INITIAL_RATE,
        "slow start doubles each second"
    );
    let t = t0 + Duration::from_secs(3);
    r.refused(t, t0);
    assert_eq!(r.rate(), INITIAL_RATE);
    r.refused(t + Duration::from_millis(10), t - Duration::from_millis(1));
    assert_eq!(r.rate(), INITIAL_RATE, "sent before the decrease: ignored");
    r.refused(t + Duration::from_millis(20), t + Duration::from_millis(5));
    assert_eq!(
        r.rate(),
        INITIAL_RATE,
        "sent within a second of it: ignored"
    );
    r.refused(t + Duration::from_secs(2), t + Duration::from_millis(1500));
    assert_eq!(r.rate(), INITIAL_RATE * DECREASE);
    r.learn(17.0);
    assert_eq!(r.period(), Duration::from_secs_f64(1.0 / 17.0));
}

#[test]
fn concurrency_halves_on_timeouts_and_grows_back_by_one_a_second() {
    let t0 = Instant::now();
    let mut c = Concurrency::new(t0, 16);
    c.overloaded(t0, t0);
    c.overloaded(t0 + Duration::from_millis(1), t0);
    assert_eq!(c.limit(), 8, "one halving per round trip");
    c.overloaded(t0 + Duration::from_millis(2), t0 + Duration::from_millis(1));
    assert_eq!(c.limit(), 4);
    for s in 1..=20 {
        c.answered(t0 + Duration::from_secs(s));
    }
    assert_eq!(c.limit(), 16, "capped at the configured maximum");
}

/// nginx's `limit_req` without a burst, on a millisecond clock: a request closer than the
/// period to the last admitted one is refused, and counts nothing.
struct Strict {
    period_ms: u64,
    last: Option<u64>,
}

impl Strict {
    fn admit(&mut self, now_ms: u64) -> bool {
        match self.last {
            Some(last) if now_ms - last < self.period_ms => false,
            _ => {
                self.last = Some(now_ms);
                true
            }
        }
    }
}

/// Paces `n` requests at `ceiling_period` over the margin against `limiter`, on the
/// paused tokio clock: each admitted one is answered a round trip later, each refused one
/// after `refused_rtt` (a gateway answers a 429 at once), and the spacing before a request
/// is that of the margin when it goes, as the gate's schedule keeps it. `throttle(i)` may
/// change the limiter before request `i`. Returns which were refused.
async fn drive(
    margin: &Arc<Mutex<Margin>>,
    limiter: &Arc<Mutex<Strict>>,
    ceiling_period: Duration,
    n: usize,
    refused_rtt: Duration,
    throttle: impl Fn(usize, &mut Strict),
) -> Vec<bool> {
    const RTT: Duration = Duration::from_millis(300);
    let start = Instant::now();
    let refused = Arc::new(Mutex::new(vec![false; n]));
    let mut last: Option<Instant> = None;
    let mut answers = Vec::new();
    for i in 0..n {
        if let Some(last) = last {
            loop {
                let fraction = margin.lock().unwrap().fraction();
                let due = last + ceiling_period.div_f64(fraction);
                if Instant::now() >= due {
                    break;
                }
                tokio::time::sleep_until(due).await;
            }
        }
        last = Some(Instant::now());
        throttle(i, &mut limiter.lock().unwrap());
        let sent = margin.lock().unwrap().sent(Instant::now(), 1.0);
        let now_ms = (Instant::now() - start).as_millis() as u64;
        let ok = limiter.lock().unwrap().admit(now_ms);
        let (margin, refused) = (margin.clone(), refused.clone());
        answers.push(tokio::spawn(async move {
            tokio::time::sleep(if ok { RTT } else { refused_rtt }).await;
            if ok {
                margin
                    .lock()
                    .unwrap()
                    .answered(Instant::now(), sent, RTT, 1);
            } else {
                margin.lock().unwrap().refused(sent, 1);
                refused.lock().unwrap()[i] = true;
            }
        }));
    }
    for a in answers {
        a.await.unwrap();
    }
    Arc::try_unwrap(refused).unwrap().into_inner().unwrap()
}

fn share(refused: &[bool]) -> f64 {
    refused.iter().filter(|r| **r).count() as f64 / refused.len() as f64
}

/// The config says 25/s, a zero-burst limiter admits 20/s: the margin settles just under
/// what is admitted, paying a few 429s to find it and few once there, whether the 429s
/// come back at once or after a round trip like the admitted requests.
#[tokio::test(start_paused = true)]
async fn the_margin_converges_to_what_a_strict_limiter_admits() {
    for refused_rtt in [Duration::from_millis(300), Duration::from_millis(2)] {
        let margin = Arc::new(Mutex::new(Margin::new(Instant::now())));
        let limiter = Arc::new(Mutex::new(Strict {
            period_ms: 50,
            last: None,
        }));
        let period = Duration::from_millis(40);
        let refused = drive(&margin, &limiter, period, 2000, refused_rtt, |_, _| {}).await;
        let fraction = margin.lock().unwrap().fraction();
        eprintln!(
            "429s after {refused_rtt:?}: fraction {fraction:.3}, 429s {:.2}%, of the last \
             1000 {:.2}%",
            100.0 * share(&refused),
            100.0 * share(&refused[1000..]),
        );
        // Just under 20/s, probing a hair above it now and then.
        assert!((0.74..=0.82).contains(&fraction), "settled at {fraction}");
        assert!(
            share(&refused) <= 0.01,
            "{:.2}% refused",
            100.0 * share(&refused)
        );
        // Settled, it still crosses the limit now and then (a hair over a zero-burst
        // limiter refuses every other request for a round trip): a few 429s a thousand.
        assert!(share(&refused[1000..]) <= 0.005, "once settled, few");
    }
}

/// A lone 429 is a pacing miss, however early in its generation it comes (none of it
/// answered yet): it costs the least cut. More 429s among the requests sent near it deepen
/// the cut by their share; 429s that keep coming, one every few dozen requests, deepen it by
/// their number.
#[test]
fn a_lone_429_costs_little_and_more_near_it_cost_more() {
    let t0 = Instant::now();
    let mut m = Margin::new(t0);
    m.join(1.0);
    let old: Vec<Sent> = (0..40).map(|_| m.sent(t0, 1.0)).collect();
    m.refused(old[5], 1);
    let first = 1.0 - MARGIN_MIN_CUT;
    assert!((m.fraction() - first).abs() < 1e-9);
    let new: Vec<Sent> = (0..25).map(|_| m.sent(t0, 1.0)).collect();
    m.refused(new[24], 1);
    let second = first * (1.0 - 2.0 * MARGIN_MIN_CUT);
    assert!(
        (m.fraction() - second).abs() < 1e-9,
        "refused before any of its generation was answered, the second 429 of the last \
         {MARGIN_RECENT} sent: {}",
        m.fraction()
    );
    m.refused(old[35], 1);
    assert_eq!(
        m.fraction(),
        second,
        "sent at the old rate: no deeper than its cut"
    );
    let next = m.sent(t0, 1.0);
    m.refused(next, 1);
    let near = 1.0 / MARGIN_WINDOW as f64;
    let third = second * (1.0 - (MARGIN_SHARE * near).max(4.0 * MARGIN_MIN_CUT));
    assert!(
        (m.fraction() - third).abs() < 1e-9,
        "a 429 next to another, the fourth of the last {MARGIN_RECENT}: {}",
        m.fraction()
    );
    let later: Vec<Sent> = (0..MARGIN_RECENT).map(|_| m.sent(t0, 1.0)).collect();
    m.refused(later[MARGIN_RECENT as usize - 1], 1);
    assert!(
        (m.fraction() - third * (1.0 - MARGIN_MIN_CUT)).abs() < 1e-9,
        "alone again once the others are {MARGIN_RECENT} requests back: {}",
        m.fraction()
    );
}

/// A job of three sharing the account's pace sends a third of its requests and sees a third of
/// its 429s: each stands for three of the account's, counted over the job's last third of
/// `MARGIN_RECENT` requests, so that three jobs come down as fast as one alone would (and
/// settle where it would, since each also creeps three times as fast on its answers).
#[test]
fn a_429_to_one_of_three_jobs_counts_for_the_accounts_share() {
    let t0 = Instant::now();
    let mut m = Margin::new(t0);
    m.join(1.0);
    let first = m.sent(t0, 1.0);
    m.refused(first, 3);
    let once = 1.0 - 3.0 * MARGIN_MIN_CUT;
    assert!(
        (m.fraction() - once).abs() < 1e-9,
        "three of the account's: {}",
        m.fraction()
    );
    let near: Vec<Sent> = (0..20).map(|_| m.sent(t0, 1.0)).collect();
    m.refused(near[19], 3);
    let twice = once * (1.0 - 6.0 * MARGIN_MIN_CUT);
    assert!(
        (m.fraction() - twice).abs() < 1e-9,
        "six among the account's last {MARGIN_RECENT}: {}",
        m.fraction()
    );
    let far: Vec<Sent> = (0..MARGIN_RECENT / 3).map(|_| m.sent(t0, 1.0)).collect();
    m.refused(far[far.len() - 1], 3);
    assert!(
        (m.fraction() - twice * (1.0 - 3.0 * MARGIN_MIN_CUT)).abs() < 1e-9,
        "the others are the account's {MARGIN_RECENT} requests back: {}",
        m.fraction()
    );
}

/// Jobs sharing an account go at the slowest pace any of them learned. A 429 to a job whose
/// own margin is higher cuts from the pace its request went at: otherwise only the 429s of the
/// slowest job would lower the account's pace, and the others' would be spent for nothing.
#[test]
fn a_429_at_the_accounts_slower_pace_cuts_from_it() {
    let t0 = Instant::now();
    let mut m = Margin::new(t0);
    m.join(1.0);
    let sent = m.sent(t0, 0.8);
    m.refused(sent, 1);
    assert!(
        (m.fraction() - 0.8 * (1.0 - MARGIN_MIN_CUT)).abs() < 1e-9,
        "cut from the account's pace: {}",
        m.fraction()
    );
    let own = m.sent(t0, 1.0);
    m.refused(own, 1);
    assert!(
        m.fraction() < 0.8 * (1.0 - MARGIN_MIN_CUT),
        "and from its own once that is the slower: {}",
        m.fraction()
    );
}

/// A passing throttle (another product using the shared quota for a while) halves what
/// the provider admits; once it is over, the margin comes back near the configured rate.
#[tokio::test(start_paused = true)]
async fn the_margin_recovers_after_a_passing_throttle() {
    let margin = Arc::new(Mutex::new(Margin::new(Instant::now())));
    let limiter = Arc::new(Mutex::new(Strict {
        period_ms: 50,
        last: None,
    }));
    let period = Duration::from_millis(50);
    let throttled = |i: usize, l: &mut Strict| {
        l.period_ms = if (300..600).contains(&i) { 100 } else { 50 };
    };
    let m = margin.clone();
    let low = Arc::new(Mutex::new(1.0f64));
    let seen = low.clone();
    let watch = tokio::spawn(async move {
        for _ in 0..4000 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let f = m.lock().unwrap().fraction();
            let mut low = seen.lock().unwrap();
            *low = low.min(f);
        }
    });
    let refused = drive(
        &margin,
        &limiter,
        period,
        4500,
        Duration::from_millis(300),
        throttled,
    )
    .await;
    watch.abort();
    let (lowest, fraction) = (*low.lock().unwrap(), margin.lock().unwrap().fraction());
    eprintln!(
        "lowest {lowest:.3}, final {fraction:.3}, 429s {:.2}%",
        100.0 * share(&refused)
    );
    assert!(lowest <= 0.55, "the throttle was followed down: {lowest}");
    assert!(fraction >= 0.9, "and back up: {fraction}");
    assert!(share(&refused[1000..]) <= 0.005);
}
