//! JUnit XML through quick-junit: one testsuite per board, one testcase per scenario, the
//! failure text carrying the reason and the evidence.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use sparring_runner::events::Verdict;

use crate::{ReportError, RunRecord};

pub fn render(record: &RunRecord) -> Result<String, ReportError> {
    let mut report = Report::new("sparring");
    // Boards in the order they first reported (results of a pool interleave).
    let mut boards: Vec<&str> = Vec::new();
    for r in &record.results {
        if !boards.contains(&r.board.as_str()) {
            boards.push(&r.board);
        }
    }
    for board in boards {
        let mut suite = TestSuite::new(board);
        for r in record.results.iter().filter(|r| r.board == board) {
            let status = match r.verdict {
                Verdict::Pass | Verdict::PassWithWarnings => TestCaseStatus::success(),
                Verdict::Skipped => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(r.reason.clone());
                    s
                }
                Verdict::Fail | Verdict::Error => {
                    let kind = if r.verdict == Verdict::Fail {
                        NonSuccessKind::Failure
                    } else {
                        NonSuccessKind::Error
                    };
                    let mut s = TestCaseStatus::non_success(kind);
                    s.set_message(r.reason.clone());
                    s.set_description(r.evidence.join("\n"));
                    s
                }
            };
            let mut case = TestCase::new(r.id.clone(), status);
            case.set_classname(format!(
                "sparring.{}",
                r.tags.first().map_or("scenario", String::as_str)
            ));
            case.set_time(Duration::from_millis(r.elapsed_ms));
            if !r.warnings.is_empty() {
                case.set_system_out(format!("warnings: {}", r.warnings.join("; ")));
            }
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    report
        .to_string()
        .map_err(|e| ReportError::Junit(e.to_string()))
}
