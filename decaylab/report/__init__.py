"""Reports of design-space sweeps: tables over seeds, the paper's figures, and verdicts on its four findings.

    from decaylab.report import write_report
    write_report("runs/quick")      # -> runs/quick/report.md, runs/quick/report.html
"""

from decaylab.lazy import lazy_exports

# Names resolve on first use, so importing one submodule (a command-line module, say) does not import
# torch and the rest of the package.
_EXPORTS = {
    "SweepData": "decaylab.report.data",
    "load_sweep": "decaylab.report.data",
    "Verdict": "decaylab.report.findings",
    "all_findings": "decaylab.report.findings",
    "write_report": "decaylab.report.render",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
