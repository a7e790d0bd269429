"""Reports of design-space sweeps: tables over seeds, the paper's figures, and verdicts on its four findings.

    from decaylab.report import write_report
    write_report("runs/quick")      # -> runs/quick/report.md, runs/quick/report.html
"""

from decaylab.report.data import SweepData, load_sweep
from decaylab.report.findings import Verdict, all_findings
from decaylab.report.render import write_report

__all__ = ["SweepData", "load_sweep", "Verdict", "all_findings", "write_report"]
