"""Performance benchmarks of miet_fed: `python -m benchmarks --help`.

The harness (`harness`: CLI, `--only` selection, output files) runs benchmark modules, one per
benchmark (`backbone_service`, `cache`, `sim_vs_serial`, `scaling`, `cohorts`, `startup`,
`edge_resources`, `checkpoint`). They share `report` (the `Report` a benchmark returns and its
markdown, as BENCHMARKS.md shows it), `machine` (machine facts, process-tree memory sampling) and
`jobs` (backbones, feature prefill, `miet-fed simulate` as a timed subprocess whose timings are
read from its run folder and JSON summary).
"""
