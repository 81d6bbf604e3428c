"""mutmut 2.x configuration: which tests each core module is checked with.

Mutation testing is a habit, not a CI job (docs/testing.md): one module at a
time, niced, with the smallest fast test selection that exercises it. mutmut
imports this file from the repository root; the runner it calls is this file
run as a script::

    nice -n 15 mutmut run --paths-to-mutate fljax/aggregators/krum.py \
        --runner "python mutmut_config.py fljax/aggregators/krum.py"
    mutmut results            # ids of survivors;  mutmut show ID  for the diff
    python mutmut_config.py --report MODULE            # counts and survivors' diffs
    python mutmut_config.py --recheck CACHE MODULE     # old survivors against today's tests

What is not run (``pre_mutation`` marks it skipped), each for a reason stated
in docs/testing.md:

* the wording of a message (a string mutated to ``"XX...XX"`` that holds a
  space or sits in a ``require`` / ``raise`` line): a message is not a result;
* a rule's ``memory`` declaration (functions whose name ends in ``memory``):
  it feeds the memory estimate and the chunk choice, never a number a run
  produces (backends and chunks give the same results: tested).

The runner uses a persistent JAX compilation cache (``$FLJAX_MUTATION_CACHE``,
default ``/tmp/fljax-mutation-jax-cache``): programs a mutant does not change
are not compiled again, which cuts a mutant's cost ~3x. Any failure (a test, a
collection or import error) is exit status 1, which is what mutmut counts as
killed (it counts every other non-zero status as survived).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

# module -> pytest arguments. Fast tests first: ``-x`` stops at the first
# failure, so a killed mutant usually costs one import and one small compile.
# A key ``module:lo-hi[,lo-hi...]`` gives those lines (1-based) of the module their own
# selection (a part only some tests reach, whose collection is costly).
_AGG = "tests/aggregators/"
_R2 = [_AGG + "round2_test.py", _AGG + "round2_edges_test.py"]  # the second round of rules
TESTS = {
    "fljax/client.py": [
        "tests/client_test.py",
        "tests/attacks/backdoor_test.py::test_pgd_projects_after_every_step",
        "tests/attacks/backdoor_test.py::test_neurotoxin_leaves_masked_coordinates_at_zero",
        "tests/simulate_test.py::test_round_matches_independent_reference[fedavg]",
        "tests/simulate_test.py::test_round_matches_independent_reference[uneven-padded]",
        "tests/simulate_test.py::test_round_matches_independent_reference[fixed-steps]"],
    "fljax/round.py": [
        "tests/simulate_test.py", "tests/scale_test.py",
        "tests/attacks/backdoor_test.py::test_only_sampled_malicious_rows_change",
        "tests/attacks/adaptive_test.py::test_search_in_the_round_is_against_the_servers_rule",
        "-k",
        "matches_independent_reference or exactly_the_sampled or server_transforms_reach "
        "or label_flip_inside or schedule_in_the_round or server_resources or non_finite "
        "or pre_aggregation or every_backend or attackers_state or make_optimizer "
        "or chunk_norms or diagnostics_name or bad_configs or err_scores or streamed_rules "
        "or per_tensor or only_sampled_malicious or streamed_round_reports or search_in_the_round "
        "or (every_rule_traces and (fltrust or flame or foolsgold))"],
    # The host driver: programs, run keys, cells, history, resume, evaluation cadence.
    "fljax/simulate.py": [
        "tests/simulate_driver_test.py", "tests/simulate_test.py", "tests/sweep_test.py",
        "tests/scale_test.py", "-k",
        "resume or same_seed or non_finite or partial_last_batch or new_hyperparameters "
        "or matches_independent_reference or interrupted or cells_per_program "
        "or vmapped_group or turns_nan or rerun_skips or history_and_late or throughput "
        "or simulate_driver_test"],
    # Its mesh (several devices): only the 8-fake-device subprocesses reach it;
    # a sweep's cells over devices only in the slow one (``-m`` lets it run).
    "fljax/simulate.py:64-186,234-243,280-283": [
        "tests/simulate_test.py", "tests/sharded_test.py", "-m", "not notebooks", "-k",
        "resume_is_exact or sharded_paths or sharded_rounds"],
    # The client axis over devices (chunking, the dispatch, the streamed psum,
    # the buffer): the same, then the 8-fake-device subprocess.
    "fljax/round.py:158-166,322-370,400-432,445-453": [
        "tests/simulate_test.py", "tests/scale_test.py", "tests/sharded_test.py", "-k",
        "matches_independent_reference or every_backend or server_transforms_reach "
        "or streamed_rules or streamed_round_reports or sharded_rounds"],
    "fljax/execution.py": [
        "tests/scale_test.py::test_the_budget_picks_the_chunk_and_bad_budgets_fail_with_the_figure",
        "tests/simulate_test.py::test_round_matches_independent_reference[fedavg]",
        "tests/simulate_test.py::test_every_backend_gives_the_same_params",
        "tests/scale_test.py::test_streamed_rules_equal_their_dense_form"],
    # flat_rows: one device (streamed rows) and the column blocks over devices.
    "fljax/execution.py:127-140": [
        "tests/simulate_test.py::test_every_backend_gives_the_same_params",
        "tests/sharded_test.py::test_sharded_rounds_equal_one_device"],
    # The client axis over devices: only the 8-fake-device subprocess reaches it.
    "fljax/execution.py:178-246": [
        "tests/sharded_test.py::test_sharded_rounds_equal_one_device"],
    "fljax/transforms.py": ["tests/transforms_test.py", "tests/leakage/defences_test.py"],
    # The data-leakage attacks: their own tests, then the attacks end to end.
    "fljax/attacks/leakage/metrics.py": ["tests/leakage/metrics_test.py"],
    "fljax/attacks/leakage/objectives.py": [
        "tests/leakage/objectives_test.py", "tests/leakage/attacks_test.py"],
    "fljax/attacks/leakage/optimize.py": [
        "tests/leakage/optimize_test.py", "tests/leakage/attacks_test.py"],
    "fljax/attacks/leakage/observe.py": [
        "tests/leakage/objectives_test.py", "tests/leakage/idlg_test.py",
        "tests/leakage/engine_test.py", "tests/leakage/attacks_test.py"],
    **{f"fljax/attacks/leakage/{m}.py": [
        "tests/leakage/engine_test.py", "tests/leakage/idlg_test.py",
        "tests/leakage/attacks_test.py", "tests/leakage/leak_test.py"]
       for m in ("__init__", "base", "dlg", "idlg", "dlm", "inverting_gradients")},
    "fljax/aggregators/krum.py": [
        _AGG + "stats_test.py", _AGG + "conformance_test.py", "-k",
        "krum or impossible or all_rows"],
    "fljax/aggregators/krum.py:156-178": [  # leave_one_out (for ERR / LFR)
        _AGG + "leave_one_out_test.py", "-k", "krum_leave_one_out or bounds_are"],
    "fljax/aggregators/trimmed_mean.py": [
        _AGG + "stats_test.py", _AGG + "conformance_test.py", "-k",
        "trimmed or impossible or order_statistic or invariant or all_rows"],
    # Its leave-one-out form (for ERR / LFR): only the leave-one-out tests reach it.
    "fljax/aggregators/trimmed_mean.py:185-235": [
        _AGG + "leave_one_out_test.py", "-k", "trimmed_mean_leave_one_out or bounds_are"],
    "fljax/aggregators/median.py": [
        _AGG + "stats_test.py", _AGG + "conformance_test.py", "-k",
        "(median and not geometric) or impossible or order_statistic or all_rows"],
    "fljax/aggregators/bulyan.py": [
        _AGG + "stats_test.py", _AGG + "conformance_test.py", "tests/kernels/order_stats_test.py",
        "-k", "bulyan or impossible"],
    "fljax/aggregators/norm_clipping.py": [
        _AGG + "model_rules_test.py", _AGG + "model_table_test.py", "tests/scale_test.py",
        "-k", "norm_clipping or weak_dp or streamed_rules"],
    "fljax/aggregators/weak_dp.py": [
        _AGG + "model_rules_test.py", _AGG + "model_table_test.py", "tests/scale_test.py",
        "-k", "weak_dp or streamed_rules"],
    "fljax/aggregators/robust_lr.py": [
        _AGG + "model_rules_test.py", _AGG + "model_table_test.py", "-k", "robust_lr"],
    "fljax/aggregators/arc.py": [
        _AGG + "round2_test.py", _AGG + "kernel_choice_test.py", "-k", "arc or factories"],
    "fljax/aggregators/mean.py": [
        _AGG + "stats_test.py", _AGG + "conformance_test.py", "tests/scale_test.py", "-k",
        "mean and not trimmed and not geometric and not meamed"],
    "fljax/aggregators/_rejection.py": [  # leave_one_out_test: a wrapped rule's shared form
        _AGG + "rejection_test.py", _AGG + "model_rules_test.py", _AGG + "model_table_test.py",
        _AGG + "leave_one_out_test.py",
        "tests/simulate_test.py::test_err_scores_the_models_the_server_really_makes", "-k",
        "err or lfr or rejection or leave_one_out_means or wrapped or client_weights "
        "or smallest_settings"],
    "fljax/aggregators/geometric_median.py": [
        _AGG + "stats_test.py", _AGG + "conformance_test.py", "tests/scale_test.py", "-k",
        "geometric or impossible"],
    "fljax/aggregators/centered_clipping.py": [
        _AGG + "model_rules_test.py", _AGG + "model_table_test.py", "tests/scale_test.py",
        "tests/simulate_test.py::test_resume_is_exact", "-k", "centered or resume"],
    "fljax/aggregators/foolsgold.py": [
        _AGG + "model_rules_test.py", _AGG + "model_table_test.py", _AGG + "rejection_test.py",
        "-k", "foolsgold"],
    "fljax/aggregators/flame.py": [
        _AGG + "model_rules_test.py", _AGG + "model_table_test.py", "-k", "flame"],
    "fljax/aggregators/fltrust.py": [
        _AGG + "model_rules_test.py", _AGG + "model_table_test.py",
        "tests/simulate_test.py::test_server_resources_use_their_own_examples", "-k",
        "fltrust or server_resources"],
    # The second round of rules: the conformance table (float64 NumPy references),
    # round2_test's and round2_edges_test's tests (the factory checks, and the size
    # bound for the two exact searches); the model table for rules that take the params.
    **{f"fljax/aggregators/{rule}.py": [_AGG + "conformance_test.py", *_R2, "-k",
                                         f"{rule} or factories{more}"]
       for rule, more in (("dnc", ""), ("signguard", ""), ("mda", " or combinatorial"),
                          ("caf", ""), ("smea", " or combinatorial"), ("meamed", ""),
                          ("monna", ""))},
    "fljax/aggregators/invariant.py": [
        _AGG + "conformance_test.py", _AGG + "stats_test.py", _AGG + "kernel_choice_test.py",
        "-k", "invariant"],
    "fljax/aggregators/multi_metrics.py": [
        _AGG + "model_table_test.py", *_R2, "-k", "multi_metrics or factories"],
    "fljax/aggregators/crfl.py": [
        _AGG + "model_table_test.py", *_R2, "-k", "crfl or factories"],
    "fljax/aggregators/nnm.py": [*_R2, "-k", "nnm or pre_aggregators or factories"],
    "fljax/aggregators/bucketing.py": [
        *_R2, "tests/simulate_test.py", "-k",
        "bucketing or pre_aggregators or factories"],
    "fljax/aggregators/compose.py": [
        *_R2, _AGG + "model_rules_test.py", "-k",
        "compose or pre_aggregators"],
    # The shared rule helpers: their own tests, then the rules that reach each part.
    "fljax/aggregators/_ops.py": [
        _AGG + "linalg_test.py", _AGG + "stats_test.py", _AGG + "conformance_test.py", *_R2,
        "tests/sharded_test.py",
        "-k", "linalg_test or krum or bulyan or impossible or all_rows or tie or nnm or mda "
              "or smea or bucketing or sharded_rounds"],
    # The blocked Gram matrix (pairwise distances: Krum, Bulyan, the attacks' Gram).
    "fljax/aggregators/_ops.py:122-163": [
        _AGG + "stats_test.py", _AGG + "linalg_test.py", "-k",
        "gram or pairwise_sq or krum or bulyan"],
    # The zeroing copy of invalid rows and the random tie-break.
    "fljax/aggregators/_ops.py:165-197": [
        _AGG + "stats_test.py", _AGG + "rejection_test.py", *_R2, "-k",
        "krum or tie or nnm or bucketing or smea or monna or dnc or multi_metrics "
        "or rejection_test"],
    # The column tiles (the order statistics' and the client-axis sums').
    "fljax/aggregators/_ops.py:198-276": [
        _AGG + "stats_test.py", _AGG + "linalg_test.py", _AGG + "conformance_test.py", *_R2,
        "tests/sharded_test.py", "-k",
        "median or trimmed or bulyan or invariant or meamed or robust_lr or mean "
        "or order_statistic or linalg_test or sharded_rounds"],
    # The order statistics (the sorting network, the float keys, the bisection).
    "fljax/aggregators/_ops.py:277-364": [
        "tests/kernels/order_stats_test.py", _AGG + "stats_test.py", _AGG + "conformance_test.py",
        "-k", "bitonic or order_stats_test or median or trimmed or bulyan or all_rows"],
    # (the 8-fake-device subprocess: row_norms' psum / pmax over a column split)
    "fljax/aggregators/_linalg.py": [
        _AGG + "linalg_test.py", _AGG + "stats_test.py", _AGG + "conformance_test.py",
        _AGG + "model_table_test.py", "tests/sharded_test.py", "-k",
        "linalg_test or mean or geometric or centered or norm_clipping or fltrust or foolsgold "
        "or flame or all_rows or huge or tiny or mixed or sharded_rounds"],
    "fljax/aggregators/_spectral.py": [
        _AGG + "conformance_test.py", *_R2, "-k", "caf or dnc or smea"],
    "fljax/aggregators/_kernels.py": [
        _AGG + "kernel_choice_test.py", "tests/kernels/order_stats_test.py"],
    "fljax/aggregators/base.py": [
        _AGG + "conformance_test.py", _AGG + "model_table_test.py", _AGG + "stats_test.py",
        "tests/sharded_test.py", "-k",
        "on_pytree or all_rows or nonfinite or impossible or every_rule or optional_fields "
        "or one_client or sharded_rounds"],
    **{f"fljax/aggregators/{rule}.py": [
        _AGG + "rejection_test.py", _AGG + "model_rules_test.py", _AGG + "model_table_test.py",
        "tests/simulate_test.py::test_err_scores_the_models_the_server_really_makes", "-k",
        f"{rule} or rejection or wrapped or client_weights or smallest_settings"]
       for rule in ("err", "lfr")},
    # M2M's multi-label backdoor, its triggers and BadNets' patch.
    "fljax/attacks/m2m.py": ["tests/attacks/m2m_test.py", "tests/attacks/triggers_test.py"],
    "fljax/attacks/triggers.py": ["tests/attacks/triggers_test.py", "tests/attacks/m2m_test.py"],
    "fljax/attacks/badnets.py": ["tests/attacks/triggers_test.py", "tests/attacks/m2m_test.py"],
    "fljax/attacks/gaussian.py": [
        "tests/attacks/update_attacks_test.py", "tests/attacks/poisoning_test.py", "-k",
        "gaussian or benign_rows or mask_is_traced"],
    "fljax/attacks/label_flip.py": [
        "tests/attacks/update_attacks_test.py", "tests/simulate_test.py", "-k", "label_flip"],
    "fljax/attacks/_common.py": [
        "tests/attacks/poisoning_test.py", "-k",
        "uniform_noise or ipm or alie or fang_trimmed or min_max or min_sum or fang_krum_lambda "
        "or one_partial or no_malicious or nonfinite"],
    "fljax/attacks/alie.py": ["tests/attacks/poisoning_test.py", "-k", "alie or bad_values"],
    "fljax/attacks/fang.py": ["tests/attacks/poisoning_test.py", "-k", "fang or bad_values"],
    "fljax/attacks/ipm.py": ["tests/attacks/poisoning_test.py", "-k", "ipm or bad_values"],
    "fljax/attacks/min_max.py": [
        "tests/attacks/poisoning_test.py", "-k", "min_max or min_sum or bad_values"],
    "fljax/attacks/sign_flip.py": [
        "tests/attacks/update_attacks_test.py", "tests/attacks/poisoning_test.py", "-k",
        "sign_flip"],
    # The adaptive attacks (the searched scale of ALIE / IPM, Mimic, Inf): adaptive_test,
    # and poisoning_test's tests over every update attack and their bad values.
    **{f"fljax/attacks/{name}.py": [
        "tests/attacks/adaptive_test.py", "tests/attacks/poisoning_test.py", "-k", sel]
       for name, sel in (
           ("_search", "(adaptive_test and not mimic and not inf_rows) or optimal or bad_values"),
           *((name, f"{name} or waves or expansion or lookahead or context "
                    "or reach_the_search or bad_values") for name in ("optimal_ipm", "optimal_alie")),
           ("mimic", "mimic or bad_values"),
           ("inf", "inf or bad_values"))},
    "fljax/attacks/scaling.py": [
        "tests/attacks/poisoning_test.py", "tests/attacks/update_attacks_test.py", "-k",
        "scaling or bad_values"],
    # The attacker protocol (hooks, combine, the schedule) and the update-attack base.
    "fljax/attacks/attacker.py": [
        "tests/simulate_test.py", "tests/attacks/backdoor_test.py", "-k",
        "schedule or label_flip_inside or attackers_state or (backdoor_test and not reproduction_grids)"],
    "fljax/attacks/base.py": [
        "tests/attacks/poisoning_test.py", "tests/attacks/update_attacks_test.py",
        "tests/attacks/adaptive_test.py", "-k",
        "bad_values or benign_rows or no_retrace or knowledge or context or reach_the_search"],
    # The backdoors (backdoor_test compiles small rounds: 20-50 s a survivor).
    **{f"fljax/attacks/{name}.py": ["tests/attacks/backdoor_test.py", "-k", sel]
       for name, sel in (
           ("pgd", "pgd or bad_backdoor"),
           ("neurotoxin", "neurotoxin or bad_backdoor or do_not_retrace"),
           ("replacement", "boosting or constrain_and_scale or bad_backdoor or only_sampled "
                           "or metrics_files"),
           ("backdoor", "not reproduction_grids"),
           ("pixel_backdoor", "not reproduction_grids"),
           ("subset_backdoor", "not reproduction_grids"))},
    # The multi-label parts (targets, per-attacker boxes and metrics; the shared
    # trigger attacker) are M2M's and BadNets' too: their tests as well.
    **{key: ["tests/attacks/backdoor_test.py", "tests/attacks/triggers_test.py",
             "tests/attacks/m2m_test.py", "-k", "not reproduction_grids"]
       for key in ("fljax/attacks/backdoor.py:213-278", "fljax/attacks/pixel_backdoor.py:37-88")},
}


def _changed_lines(context):
    """(original, mutated) pairs of the lines this mutant changes."""
    from mutmut import Context, mutate

    fresh = Context(source=context.source, mutation_id=context.mutation_id,
                    filename=context.filename, dict_synonyms=context.dict_synonyms)
    mutated, _ = mutate(fresh)
    old, new = context.source.splitlines(), mutated.splitlines()
    if len(old) != len(new):
        return None
    return [(a, b) for a, b in zip(old, new) if a != b]


def _is_message(context) -> bool:
    pairs = _changed_lines(context)
    if not pairs:
        return False
    for a, b in pairs:
        if b.replace("XX", "") != a.replace("XX", ""):
            return False  # not only a string wrapped in XX
        strings = re.findall(r"XX(.*?)XX", b)
        if not any(" " in s for s in strings) and not re.search(
                r"\brequire\(|\braise\b|Error\(|warn\(|print\(", a):
            return False
    return True


def _in_memory_declaration(context) -> bool:
    """The mutated line lies in a function whose name ends in ``memory``."""
    lines = context.source.splitlines()
    i = context.mutation_id.line_number
    indent = lambda s: len(s) - len(s.lstrip())  # noqa: E731
    level = indent(lines[i])
    for j in range(i, -1, -1):
        s = lines[j]
        if not s.strip() or (j < i and indent(s) >= level):
            continue
        if s.lstrip().startswith("def "):
            return bool(re.match(r"def \w*memory\(", s.lstrip()))
        level = indent(s)
        if level == 0:
            return False
    return False


def _outside_lines(context) -> bool:
    """``$FLJAX_MUTATION_LINES`` (e.g. ``238-330,390-400``, 1-based, inclusive)
    limits a run to those lines of the module (a large module in parts)."""
    spans = os.environ.get("FLJAX_MUTATION_LINES")
    if not spans:
        return False
    return not _in_spans(spans, context.mutation_id.line_number + 1)


def _in_spans(spans: str, line: int) -> bool:
    """Whether ``line`` lies in ``spans`` (``lo-hi[,lo-hi...]``, 1-based, inclusive)."""
    for span in spans.split(","):
        lo, _, hi = span.partition("-")
        if int(lo) <= line <= int(hi or lo):
            return True
    return False


def pre_mutation(context):
    if _outside_lines(context) or _is_message(context) or _in_memory_declaration(context):
        context.skip = True
    elif context.filename in TESTS:  # several modules in one run: each its own tests
        key = _selection(context.filename, context.mutation_id.line_number + 1)
        context.config.test_command = f"{sys.executable} mutmut_config.py {key}"


def _selection(filename: str, line: int) -> str:
    """The ``TESTS`` key for a mutant on ``line`` (1-based): a ``module:lo-hi``
    entry (a part of the module that only its own tests reach, e.g. a rule's
    leave-one-out form) if one covers the line, else the module's."""
    for key in TESTS:
        name, _, spans = key.partition(":")
        if name == filename and spans and _in_spans(spans, line):
            return key
    return filename


_LEFT = ("bad_survived", "ok_suspicious", "bad_timeout")  # what a run leaves to read


def _mutants(cache: str, filename: str) -> list:
    """``(id, status, line text, 0-based line number, index)`` of every mutant
    of ``filename`` in a ``.mutmut-cache`` (opened read-only)."""
    import sqlite3

    db = sqlite3.connect(f"file:{cache}?mode=ro", uri=True)
    return db.execute(
        "select m.id, m.status, l.line, l.line_number, m.\"index\" from Mutant m "
        "join Line l on m.line = l.id join SourceFile s on l.sourcefile = s.id "
        "where s.filename = ? order by m.id", (filename,)).fetchall()


def _apply(source: str, filename: str, text: str, index: int, number: int) -> tuple:
    """``(mutated source, its changed lines as "old -> new | ...")`` of the
    mutant ``index`` on line ``number`` (0-based, holding ``text``), as mutmut
    numbers them."""
    from mutmut import Context, RelativeMutationID, mutate

    mutant = mutate(Context(source=source, filename=filename, mutation_id=RelativeMutationID(
        text, index, number, filename)))[0]
    diff = " | ".join(f"{a.strip()}  ->  {b.strip()}" for a, b in
                      zip(source.splitlines(), mutant.splitlines()) if a != b)
    return mutant, diff


def report(modules) -> None:
    """Counts per module from ``.mutmut-cache`` and each survivor's diff
    (read-only; run it after the run has finished: the diffs are computed
    against the module as it is now)."""
    import sqlite3

    db = sqlite3.connect("file:.mutmut-cache?mode=ro", uri=True)
    files = [f for (f,) in db.execute("select filename from SourceFile order by filename")]
    for filename in files:
        if modules and filename not in modules:
            continue
        rows = _mutants(".mutmut-cache", filename)
        counts = {}
        for _, status, *_ in rows:
            counts[status] = counts.get(status, 0) + 1
        print(f"{filename}: {len(rows)} mutants {counts}")
        source = open(filename).read()
        for mid, status, line, number, index in rows:
            if status in _LEFT:
                diff = _apply(source, filename, line, index, number)[1]
                print(f"  {mid} {status} line {number + 1}: {diff[:300]}")


def recheck(cache: str, module: str) -> None:
    """Re-applies the survivors recorded in ``cache`` (a ``.mutmut-cache`` of an
    earlier run) to ``module`` as it is now, one at a time, and runs each
    through its selection: one line per mutant (killed, SURVIVED or
    "line gone"). A mutant is found by its line's text (the nearest such
    line) and its index there, as mutmut numbers them. It edits ``module``
    in place and puts it back after each mutant: run it on a clean tree,
    never beside a mutation run."""
    source = open(module).read()
    lines = source.split("\n")
    for mid, status, text, old, index in _mutants(cache, module):
        if status not in _LEFT:
            continue
        found = [i for i, line in enumerate(lines) if line == text]
        if not found:
            print(f"{mid} line gone: {text.strip()[:100]}", flush=True)
            continue
        number = min(found, key=lambda i: abs(i - old))
        mutant, diff = _apply(source, module, text, index, number)
        try:
            with open(module, "w") as f:
                f.write(mutant)
            rc = main(_selection(module, number + 1))
        finally:
            with open(module, "w") as f:
                f.write(source)
        print(f"{mid} line {number + 1} {'killed' if rc else 'SURVIVED'}: {diff[:200]}",
              flush=True)


def main(module: str) -> int:
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    env.setdefault("JAX_COMPILATION_CACHE_DIR",
                   os.environ.get("FLJAX_MUTATION_CACHE", "/tmp/fljax-mutation-jax-cache"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    # -n 0: one process (pyproject's addopts run the suite on 2 xdist workers;
    # a mutant's small selection would pay for starting them).
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-n", "0", "-p", "no:cacheprovider",
           "--no-header", "-W", "ignore", *TESTS[module]]
    rc = subprocess.call(cmd, env=env, preexec_fn=_die_with_parent)
    return 0 if rc == 0 else 1


def _die_with_parent() -> None:
    """On Linux, the test process is killed when this runner dies. mutmut
    kills only the runner on a timeout; without this, a mutant that loops
    forever (``j = 2`` in the sorting network) would keep its orphaned pytest
    running after the run has moved on."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


if __name__ == "__main__":
    if sys.argv[1] == "--report":
        report(sys.argv[2:])
    elif sys.argv[1] == "--recheck":
        recheck(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main(sys.argv[1]))
