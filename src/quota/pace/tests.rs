use super::*;

const MS: Duration = Duration::from_millis(1);

/// Takes `n` slots as soon as they can be had, sleeping in between.
fn slots(pacer: &mut Pacer, n: usize, lead: Duration) -> Vec<Duration> {
    let mut got = Vec::new();
    while got.len() < n {
        match pacer.take(lead) {
            Ok(at) => got.push(at),
            Err(when) => std::thread::sleep(when.saturating_sub(mono_now())),
        }
    }
    got
}

/// Two runs' pacers at `period` over one shared schedule file, kept in the directory returned.
fn sharing(period: Duration) -> (tempfile::TempDir, Pacer, Pacer) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pace.bin");
    let a = Pacer::new(Schedule::shared(&path).unwrap(), period);
    let b = Pacer::new(Schedule::shared(&path).unwrap(), period);
    (dir, a, b)
}

#[test]
fn paces_from_the_first_request_without_a_burst() {
    let mut p = Pacer::new(Schedule::local(), 20 * MS);
    p.agree(20 * MS, true);
    let got = slots(&mut p, 5, Duration::ZERO);
    for w in got.windows(2) {
        assert!(w[1] - w[0] >= 20 * MS, "{:?}", w[1] - w[0]);
    }
    assert!(
        got[4] - got[0] < 90 * MS,
        "no slot lost: {:?}",
        got[4] - got[0]
    );
}

#[test]
fn a_slot_is_granted_its_lead_before_it_is_due() {
    let mut p = Pacer::new(Schedule::local(), 30 * MS);
    p.agree(30 * MS, true);
    let first = p.take(10 * MS).unwrap();
    let asked = mono_now();
    let second = slots(&mut p, 1, 10 * MS)[0];
    let granted = mono_now();
    assert!(second - first >= 30 * MS);
    assert!(second > granted + 8 * MS, "granted ahead of its slot");
    assert!(granted - asked >= 15 * MS);
}

/// A new limiter over the same schedule continues its slots: it neither starts full
/// (a burst) nor afresh (a gap), and a wider period moves the pending slot.
#[test]
fn a_limiter_swapped_in_keeps_the_schedule() {
    let mut p = Pacer::new(Schedule::local(), 10 * MS);
    p.agree(10 * MS, true);
    let mut got = slots(&mut p, 3, Duration::ZERO);
    p.agree(25 * MS, true);
    got.extend(slots(&mut p, 3, Duration::ZERO));
    p.agree(10 * MS, true);
    got.extend(slots(&mut p, 3, Duration::ZERO));
    let gaps: Vec<_> = got.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, g) in gaps.iter().enumerate() {
        // The slot after the last at 25 ms was set before the period narrowed again.
        let want = if (2..6).contains(&i) {
            25 * MS
        } else {
            10 * MS
        };
        assert!(*g >= want, "gap {i}: {g:?} < {want:?}: {gaps:?}");
        assert!(*g < want + 5 * MS, "gap {i}: {g:?}, a slot lost: {gaps:?}");
    }
}

/// As the grant loop asks: not before `too_early` allows, then agree, then take. Paid
/// requests (even ones) are granted a whole period ahead, polls at their slot; the period
/// narrows a little at every agree, as the margin creeping back after a 429 narrows it at
/// every answer, so that each take goes through a limiter swapped in just before it.
#[test]
fn a_limiter_swapped_in_at_every_take_keeps_every_slot() {
    let mut period = 40 * MS;
    let mut p = Pacer::new(Schedule::local(), period);
    let mut got = Vec::new();
    while got.len() < 12 {
        let lead = if got.len() % 2 == 0 {
            period
        } else {
            Duration::ZERO
        };
        if let Some(when) = p.too_early(lead) {
            std::thread::sleep(when.saturating_sub(mono_now()));
            continue;
        }
        period = period.mul_f64(1.0 - 1e-5);
        p.agree(period, true);
        match p.take(lead) {
            Ok(at) => got.push(at),
            Err(when) => std::thread::sleep(when.saturating_sub(mono_now())),
        }
    }
    // A slot lost is a whole period more; a thread woken late on a busy machine, a few ms.
    let gaps: Vec<_> = got.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, g) in gaps.iter().enumerate() {
        assert!(*g >= period - MS, "gap {i}: {g:?}: {gaps:?}");
        assert!(
            *g < period + 15 * MS,
            "gap {i}: {g:?}, a slot lost: {gaps:?}"
        );
    }
}

#[test]
fn two_runs_on_one_schedule_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pace.bin");
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut p = Pacer::new(Schedule::shared(&path).unwrap(), 10 * MS);
                let mut got = Vec::new();
                let end = mono_now() + Duration::from_millis(600);
                while mono_now() < end {
                    p.agree(10 * MS, true);
                    match p.take(Duration::ZERO) {
                        Ok(at) => got.push(at),
                        Err(when) => std::thread::sleep(when.saturating_sub(mono_now())),
                    }
                }
                p.idle();
                got
            })
        })
        .collect();
    let runs: Vec<Vec<Duration>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut all: Vec<Duration> = runs.iter().flatten().copied().collect();
    all.sort();
    for w in all.windows(2) {
        assert!(w[1] - w[0] >= 10 * MS, "two slots {:?} apart", w[1] - w[0]);
    }
    let (a, b) = (runs[0].len(), runs[1].len());
    assert!(a + b >= 50, "{a} + {b} slots in 600 ms at 10 ms");
    assert!(a.min(b) * 10 >= a.max(b) * 8, "turns are fair: {a} and {b}");
}

/// Two jobs' slots are a period apart; when one job's request leaves late, the other job's
/// next one still leaves a period (less the slack) after it, not on its own slot.
#[test]
fn a_late_departure_spaces_the_next_one_of_another_job() {
    let (_dir, mut a, mut b) = sharing(20 * MS);
    a.agree(20 * MS, true);
    b.agree(20 * MS, true);
    let now = a.depart(MS);
    assert!(now <= mono_now(), "the first departure waits for nothing");
    let late = mono_now() + 200 * MS;
    a.departed(late);
    let due = b.depart(MS);
    assert_eq!(due, late + 19 * MS, "another job's late departure is kept");
    assert_eq!(
        a.depart(MS),
        due + 19 * MS,
        "and the reserved one after it, by the first job too"
    );
    let alone = Pacer::new(Schedule::local(), 20 * MS);
    assert!(
        alone.depart(MS) <= mono_now(),
        "a schedule of its own knows no other job's departures"
    );
}

#[test]
fn a_table_survives_its_file_and_forgets_another_boot() {
    let mut t = Table::new([7; 16]);
    t.tat = Duration::from_secs(5);
    t.taken = 3;
    t.departed = Duration::from_secs(4);
    t.enter(42, Duration::from_secs(4)).unwrap().waiting = true;
    assert_eq!(Table::decode(&t.encode()), Some(t.clone()));
    assert_eq!(Table::decode(b"not a table"), None);
    let mut other = t.clone();
    other.refresh([8; 16], Duration::from_secs(6));
    assert_eq!(
        other.tat,
        Duration::ZERO,
        "another boot's slots mean nothing"
    );
    let mut far = t.clone();
    far.refresh([7; 16], Duration::from_secs(5) + FORGOTTEN * 2);
    assert_eq!(
        far.taken, 0,
        "a schedule nobody used for long starts afresh"
    );
    let mut slow = t.clone();
    slow.runs[0].period = Duration::from_secs(120);
    slow.tat = Duration::from_secs(4 + 150);
    slow.refresh([7; 16], Duration::from_secs(4));
    assert_eq!(
        slow.taken, 3,
        "a slot two minutes ahead is a slow quota's, kept"
    );
    let mut torn = t.clone();
    torn.last_slot = torn.tat + MS;
    assert_eq!(Table::decode(&torn.encode()), None, "slots out of order");
}

#[test]
fn a_run_that_leaves_gives_up_its_turns() {
    let (_dir, mut a, mut b) = sharing(10 * MS);
    a.agree(40 * MS, true);
    assert_eq!(
        b.agree(10 * MS, true).period,
        40 * MS,
        "paced at the widest"
    );
    drop(a);
    let alone = b.agree(10 * MS, true);
    assert_eq!((alone.period, alone.runs), (10 * MS, 1));
}

/// A period too short to share is paced on the run's own schedule, under the run's own id:
/// with a second id there, every slot waited a grace for a turn that was nobody's.
#[test]
fn a_period_too_short_to_share_is_paced_without_waiting_for_turns() {
    let period = Duration::from_micros(20);
    let (_dir, mut a, _b) = sharing(period);
    let started = mono_now();
    let mut got = 0;
    // Asking again at once, not sleeping: a sleep of microseconds on a loaded machine takes
    // far longer than asked.
    while got < 200 {
        a.agree(period, true);
        if a.take(Duration::ZERO).is_ok() {
            got += 1;
        }
    }
    let took = mono_now() - started;
    assert!(
        took < 200 * GRACE / 4,
        "200 slots 20 µs apart took {took:?}"
    );
}

/// A run paced too fast to share neither reads nor writes the account's file as it goes idle
/// and wakes again: an unpaced job goes idle every few requests, and wrote the file each time.
#[test]
fn a_period_too_short_to_share_leaves_the_file_alone() {
    let period = Duration::from_micros(20);
    let (dir, mut a, _b) = sharing(period);
    let path = dir.path().join("pace.bin");
    let before = std::fs::read(&path).unwrap();
    for _ in 0..100 {
        a.agree(period, true);
        a.take(Duration::ZERO).ok();
        a.idle();
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

/// The grant thread wakes a little after the slot it waits for: such a slot is still granted
/// at its due time, so that the lateness does not push every later slot back. A slot asked for
/// long after it was due (nothing was waiting) is granted when asked.
#[test]
fn a_slot_asked_for_a_little_late_keeps_its_time() {
    let period = 10 * MS;
    let late = Duration::from_micros(300);
    let mut p = Pacer::new(Schedule::local(), period);
    p.agree(period, true);
    let mut got = vec![p.take(Duration::ZERO).unwrap()];
    while got.len() < 20 {
        match p.take(Duration::ZERO) {
            Ok(at) => got.push(at),
            Err(when) => std::thread::sleep(when.saturating_sub(mono_now()) + late),
        }
    }
    // A sleep on a loaded machine may overshoot past the catch-up now and then: that slot is
    // granted late, and the gap before it is wider; none is ever narrower.
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1] - w[0]).collect();
    let kept = gaps.iter().filter(|g| **g == period).count();
    assert!(gaps.iter().all(|g| *g >= period), "{gaps:?}");
    assert!(
        kept * 4 >= gaps.len() * 3,
        "{kept} of {} kept: {gaps:?}",
        gaps.len()
    );
    std::thread::sleep(period + 5 * MS);
    let asked = mono_now();
    let idle = p.take(Duration::ZERO).unwrap();
    assert!(idle >= asked, "a slot long past is not granted in the past");
}

/// After a take, the pacer knows when the next slot can be had: asked before then, it says so
/// without reading the schedule; a new period, or a pause in asking, forgets it.
#[test]
fn the_next_slot_is_known_until_it_comes() {
    let mut p = Pacer::new(Schedule::local(), 50 * MS);
    p.agree(50 * MS, true);
    assert_eq!(p.too_early(Duration::ZERO), None, "nothing taken yet");
    let slot = p.take(Duration::ZERO).unwrap();
    assert_eq!(p.too_early(Duration::ZERO), Some(slot + 50 * MS));
    assert_eq!(
        p.too_early(10 * MS),
        Some(slot + 40 * MS),
        "asked a lead ahead"
    );
    assert_eq!(
        p.too_early(50 * MS),
        None,
        "a period ahead, it may be taken now"
    );
    let when = p.take(Duration::ZERO).unwrap_err();
    assert_eq!(p.too_early(Duration::ZERO), Some(when));
    p.agree(100 * MS, true);
    assert_eq!(p.too_early(Duration::ZERO), None, "a new period forgets it");
    p.take(Duration::ZERO).unwrap_err();
    p.idle();
    assert_eq!(p.too_early(Duration::ZERO), None, "so does a pause");
}
