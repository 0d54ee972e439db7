//! The bisection search, apart from how a round runs: pure. Given n candidates in merge order
//! (all n together fail), it asks for subsets to test and concludes. A single culprit among n
//! takes ceil(log2 n) prefix rounds + 1 check; a pair that fails only together is found too.

/// What a bisection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// This change breaks the step.
    Blamed(usize),
    /// These two break it only together; the second is left out.
    Pair(usize, usize),
    /// The step passed on the same inputs.
    Flake,
    /// It fails without any candidate (or there is none): nobody to blame.
    Infrastructure(String),
    /// Out of rounds, a subset did not merge, a round could not run (a step awaiting
    /// approval), or the bisection was cancelled.
    Undecided(String),
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Run the subgraph with the non-candidates and these candidates (indices, ascending).
    Test(Vec<usize>),
    Done(Verdict),
}

#[derive(Debug, Clone)]
enum Phase {
    /// The smallest failing prefix lies in (lo, hi].
    Prefix {
        lo: usize,
        hi: usize,
    },
    /// The first candidate fails alone or the base fails: test the empty set.
    Empty,
    /// Does candidate k fail alone?
    Alone {
        k: usize,
    },
    /// Its partner: the smallest prefix that fails together with k lies in (lo, hi].
    Partner {
        lo: usize,
        hi: usize,
        k: usize,
    },
    Done(Verdict),
}

/// The search's state.
#[derive(Debug, Clone)]
pub struct Search {
    max_rounds: u32,
    rounds: u32,
    phase: Phase,
    /// The midpoint under test.
    mid: usize,
}

impl Search {
    pub fn new(n: usize, max_rounds: u32) -> Search {
        let phase = if n == 0 {
            Phase::Done(Verdict::Infrastructure(
                "no included change touched the step's components".into(),
            ))
        } else {
            Phase::Prefix { lo: 0, hi: n }
        };
        Search {
            max_rounds,
            rounds: 0,
            phase,
            mid: 0,
        }
    }

    /// The next subset to test, or the verdict.
    pub fn advance(&mut self) -> Next {
        let set = loop {
            match self.phase.clone() {
                Phase::Prefix { lo, hi } if hi - lo > 1 => {
                    self.mid = (lo + hi) / 2;
                    break (0..self.mid).collect();
                }
                Phase::Prefix { hi, .. } => {
                    let k = hi - 1;
                    self.phase = if k == 0 {
                        Phase::Empty
                    } else {
                        Phase::Alone { k }
                    };
                }
                Phase::Empty => break Vec::new(),
                Phase::Alone { k } => break vec![k],
                Phase::Partner { lo, hi, k } if hi - lo > 1 => {
                    self.mid = (lo + hi) / 2;
                    let mut set: Vec<usize> = (0..self.mid).collect();
                    set.push(k);
                    break set;
                }
                Phase::Partner { hi, k, .. } => {
                    self.phase = Phase::Done(Verdict::Pair(hi - 1, k));
                }
                Phase::Done(verdict) => return Next::Done(verdict),
            }
        };
        if self.rounds >= self.max_rounds {
            let why = format!("max_rounds ({}) reached", self.max_rounds);
            self.phase = Phase::Done(Verdict::Undecided(why));
            return self.advance();
        }
        self.rounds += 1;
        Next::Test(set)
    }

    /// The result of the last test: whether the step failed, or why the test was not
    /// conclusive (which ends the search undecided).
    pub fn found(&mut self, fails: Result<bool, String>) {
        let fails = match fails {
            Ok(f) => f,
            Err(why) => {
                self.phase = Phase::Done(Verdict::Undecided(why));
                return;
            }
        };
        let mid = self.mid;
        self.phase = match self.phase.clone() {
            Phase::Prefix { lo, hi } => match fails {
                true => Phase::Prefix { lo, hi: mid },
                false => Phase::Prefix { lo: mid, hi },
            },
            Phase::Empty if fails => Phase::Done(Verdict::Infrastructure(
                "the step fails without any of the candidate changes".into(),
            )),
            Phase::Empty => Phase::Done(Verdict::Blamed(0)),
            Phase::Alone { k } if fails => Phase::Done(Verdict::Blamed(k)),
            Phase::Alone { k } => Phase::Partner { lo: 0, hi: k, k },
            Phase::Partner { lo, hi, k } => match fails {
                true => Phase::Partner { lo, hi: mid, k },
                false => Phase::Partner { lo: mid, hi, k },
            },
            done @ Phase::Done(_) => done,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The search in a world where `bad` (all of them together) break the step.
    fn run(n: usize, bad: &[usize], max: u32) -> (Verdict, u32) {
        let mut search = Search::new(n, max);
        let mut count = 0;
        loop {
            match search.advance() {
                Next::Test(set) => {
                    count += 1;
                    let fails = !bad.is_empty() && bad.iter().all(|b| set.contains(b));
                    search.found(Ok(fails));
                }
                Next::Done(verdict) => return (verdict, count),
            }
        }
    }

    #[test]
    fn single_culprit_within_log2_plus_one_rounds() {
        for n in 1..=16usize {
            let bound = (n as f64).log2().ceil() as u32 + 1;
            for culprit in 0..n {
                let (verdict, rounds) = run(n, &[culprit], 20);
                assert_eq!(verdict, Verdict::Blamed(culprit), "n={n}");
                assert!(
                    rounds <= bound,
                    "n={n} culprit={culprit}: {rounds} rounds > {bound}"
                );
            }
        }
    }

    #[test]
    fn pairs_are_found() {
        for n in 2..=9usize {
            for a in 0..n {
                for b in a + 1..n {
                    let (verdict, _) = run(n, &[a, b], 20);
                    assert_eq!(verdict, Verdict::Pair(a, b), "n={n}");
                }
            }
        }
    }

    #[test]
    fn failing_without_candidates_blames_nobody() {
        let mut search = Search::new(4, 10);
        let verdict = loop {
            match search.advance() {
                Next::Test(_) => search.found(Ok(true)),
                Next::Done(v) => break v,
            }
        };
        assert!(matches!(verdict, Verdict::Infrastructure(_)), "{verdict:?}");
        let (verdict, _) = run(8, &[3], 2);
        assert!(matches!(verdict, Verdict::Undecided(_)), "{verdict:?}");
        assert!(matches!(run(0, &[], 5).0, Verdict::Infrastructure(_)));
    }

    #[test]
    fn an_inconclusive_round_ends_the_search_undecided() {
        let mut search = Search::new(8, 10);
        assert!(matches!(search.advance(), Next::Test(_)));
        search.found(Err("awaiting approval".into()));
        assert_eq!(
            search.advance(),
            Next::Done(Verdict::Undecided("awaiting approval".into()))
        );
    }
}
