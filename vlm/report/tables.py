"""Row builders: one function per table of results.json (headline, comparisons, overall, groups, CoT vs direct,
arms, status).

Rows follow the entries' order (the study's variant order, see ``collect.discover``); every number is a percent
(0–100) with the ``src`` of the metrics.json it comes from.
"""

from __future__ import annotations

from vlm.manifest import Study
from vlm.report.collect import MODES, NO_RECIPE, Entry, is_num, rounded, variant_rank
from vlm.report.stats import Scores, cell, compare_cells, gap_recovered, headline_metric, normal_blind_gap

REASONING = "has_reasoning"


def _pairs(entries: list[Entry]) -> dict[tuple[str, str, str], dict[str, Entry]]:
    """(benchmark, variant, recipe) -> {mode: entry}, complete entries only, in table order."""
    out: dict[tuple[str, str, str], dict[str, Entry]] = {}
    for e in entries:
        if e.metrics is not None:
            out.setdefault((e.metrics["benchmark"], e.variant, e.recipe), {})[e.mode] = e
    return out


def _headline_of(modes: dict[str, Entry], requested: str) -> str:
    first = modes.get("normal") or modes["blind"]
    return headline_metric(first.metrics["benchmark"], first.metrics["overall"], requested)


def headline_rows(entries: list[Entry], requested: str, scores: Scores, n_bootstrap: int, seed: int,
                  study: Study | None = None) -> list[dict]:
    """Per (benchmark, variant, recipe): normal, blind, normal − blind with a paired CI; with the study's
    gap_recovered pair also the share of that gap the row recovers."""
    pairs = _pairs(entries)
    rows = []
    for (bench, variant, recipe), modes in pairs.items():
        metric = _headline_of(modes, requested)
        normal, blind, gap = normal_blind_gap(modes, metric, scores, n_bootstrap, seed)
        row = {"benchmark": bench, "variant": variant, "recipe": recipe, "metric": metric,
               "normal": normal, "blind": blind, "gap": gap}
        if study is not None and study.gap_recovered:
            row["gap_recovered"] = _recovered_share(pairs, bench, recipe, metric, normal, study.gap_recovered, scores)
        rows.append(row)
    return rows


def _recovered_share(pairs: dict, bench: str, recipe: str, metric: str, normal: dict | None, ends: tuple[str, str],
                     scores: Scores) -> dict:
    """(row − low) / (high − low), normal mode, low and high on the row's benchmark, recipe and metric."""
    low, high = (cell(pairs.get((bench, end, recipe), {}).get("normal"), metric, scores, 0, 0) for end in ends)
    lacking = [name for name, c in (("this row", normal), *zip(ends, (low, high))) if not c or c["value"] is None]
    if lacking:
        return {"value": None, "low": low and low["value"], "high": high and high["value"],
                "note": f"no normal {recipe} {metric}: {', '.join(lacking)}"}
    return gap_recovered(normal["value"], low["value"], high["value"])


def _trained_pairing(a: str, b: str, trained: dict[str, dict], evaluated: dict[str, list[str]]) -> list[tuple]:
    """[(recipe of a, recipe of b, {"a": why, "b": why})]: each side on the recipe it was trained on; a side
    without train/<variant>/ (zero-shot) on the other side's trained recipe, so both answer the same prompt; when
    neither was trained, every recipe both were evaluated on."""
    ta, tb = trained.get(a), trained.get(b)
    if not ta and not tb:
        why = "neither trained: each recipe both were evaluated on"
        return [(r, r, {"a": why, "b": why}) for r in evaluated.get(a, []) if r in evaluated.get(b, [])]

    def side(own: dict | None, other: dict, other_name: str) -> tuple[str, str]:
        return (own["recipe"], own["source"]) if own else (other["recipe"], f"not trained: {other_name}'s recipe")

    (ra, why_a), (rb, why_b) = side(ta, tb, b), side(tb, ta, a)
    return [(ra, rb, {"a": why_a, "b": why_b})]


def comparison_rows(entries: list[Entry], study: Study | None, trained: dict[str, dict], requested: str,
                    scores: Scores, n_bootstrap: int, seed: int) -> list[dict]:
    """Per pair the study declares (A, B), per benchmark and mode: A − B, each on the recipe it was trained on
    (``_trained_pairing``), the paired CI over the ids both were evaluated on."""
    pairs = _pairs(entries)
    rows = []
    for bench in dict.fromkeys(k[0] for k in pairs):
        evaluated: dict[str, list[str]] = {}  # variant -> its recipes on this benchmark, in table order
        for in_bench, variant, recipe in pairs:
            if in_bench == bench:
                evaluated.setdefault(variant, []).append(recipe)
        for a, b in study.compare if study else ():
            for ra, rb, recipe_from in _trained_pairing(a, b, trained, evaluated):
                for m in MODES:
                    ea, eb = pairs.get((bench, a, ra), {}).get(m), pairs.get((bench, b, rb), {}).get(m)
                    if not ea and not eb:
                        continue
                    metric = headline_metric(bench, (ea or eb).metrics["overall"], requested)
                    ca, cb, diff = compare_cells(ea, eb, metric, scores, n_bootstrap, seed)
                    rows.append({"benchmark": bench, "a": a, "b": b, "mode": m, "metric": metric, "a_recipe": ra,
                                 "b_recipe": rb, "recipe_from": recipe_from, "a_value": ca, "b_value": cb,
                                 "diff": diff})
    return rows


def overall_rows(entries: list[Entry], scores: Scores, seed: int) -> list[dict]:
    rows = []
    for e in entries:
        if e.metrics is None:
            continue
        cells = {m: cell(e, m, scores, 0, seed) for m in e.metrics["overall"]}  # CIs only where metrics.json has them
        rows.append({"benchmark": e.metrics["benchmark"], "variant": e.variant, "recipe": e.recipe, "mode": e.mode,
                     "n": int(e.metrics["n"]), "src": e.src,
                     "metrics": {m: {"value": c["value"], "ci": c["ci"]} for m, c in cells.items()}})
    return rows


def group_rows(entries: list[Entry], key: str, requested: str) -> list[dict]:
    """Per question type / change type: headline metric, normal and blind side by side."""
    rows = []
    for (bench, variant, recipe), modes in _pairs(entries).items():
        metric = _headline_of(modes, requested)
        names = sorted({g for e in modes.values() for g in e.metrics.get(key, {})})
        if not names:
            continue
        groups = {}
        for g in names:
            groups[g] = {}
            for m in MODES:
                grp = modes[m].metrics.get(key, {}).get(g) if m in modes else None
                groups[g][m] = {"value": rounded(grp.get(metric)), "n": int(grp["n"])} if grp else None
        rows.append({"benchmark": bench, "variant": variant, "recipe": recipe, "metric": metric, "groups": groups,
                     "src": {m: modes[m].src for m in MODES if m in modes}})
    return rows


def cot_rows(entries: list[Entry], requested: str, scores: Scores, n_bootstrap: int, seed: int) -> list[dict]:
    """Every (variant, mode) evaluated with 'direct' and another recipe: recipe − direct, paired CI."""
    pairs = _pairs(entries)
    rows = []
    for (bench, variant, recipe), modes in pairs.items():
        direct_modes = pairs.get((bench, variant, "direct"))
        if recipe in ("direct", NO_RECIPE) or not direct_modes:
            continue
        for m in MODES:
            if m not in modes or m not in direct_modes:
                continue
            cot_e, dir_e = modes[m], direct_modes[m]
            metric = headline_metric(bench, dir_e.metrics["overall"], requested)
            cot, direct, diff = compare_cells(cot_e, dir_e, metric, scores, n_bootstrap, seed)
            reasoning = {k: rounded(x.metrics["overall"].get(REASONING))
                         for k, x in (("direct", dir_e), ("cot", cot_e))}
            rows.append({"benchmark": bench, "variant": variant, "recipe": recipe, "mode": m, "metric": metric,
                         "direct": direct, "cot": cot, REASONING: reasoning, "diff": diff})
    return rows


def arm_rows(entries: list[Entry], requested: str, scores: Scores, n_bootstrap: int, seed: int) -> list[dict]:
    """One row per study arm (eval_meta.json 'arm'): headline normal / blind / gap with CIs, the share of
    outputs with a reasoning part, and every other overall metric of the normal evaluation."""
    arms: dict[str, dict[str, Entry]] = {}
    for e in entries:
        if e.metrics is not None and e.meta.get("arm"):
            arms.setdefault(str(e.meta["arm"]), {})[e.mode] = e
    rows = []
    for arm, modes in arms.items():
        first = modes.get("normal") or modes["blind"]
        metric = _headline_of(modes, requested)
        normal, blind, gap = normal_blind_gap(modes, metric, scores, n_bootstrap, seed)
        reasoning = {m: rounded(modes[m].metrics["overall"].get(REASONING)) if m in modes else None for m in MODES}
        others = {k: rounded(v) for k, v in first.metrics["overall"].items() if k not in (metric, REASONING)}
        rows.append({"arm": arm, "benchmark": first.metrics["benchmark"], "variant": first.variant,
                     "recipe": first.recipe, "metric": metric, "normal": normal, "blind": blind, "gap": gap,
                     REASONING: reasoning, "other_metrics": others, "other_from": first.mode})
    return rows


def blind_only_variants(entries: list[Entry], study: Study | None) -> set[str]:
    """Variants without a normal/blind pair: the study's declared ones; in a run that declares no study, every
    variant evaluated blind only (a baseline that never sees an image)."""
    if study is not None:
        return set(study.blind_only)
    return {e.variant for e in entries} - {e.variant for e in entries if e.mode != "blind"}


def status_lists(entries: list[Entry], study: Study | None) -> tuple[list[dict], list[dict], list[str]]:
    """(incomplete, missing, warnings). Missing: the other mode of an evaluation (blind-only variants have
    none), and every variant the study declares that has no eval directory."""
    incomplete, missing, warnings = [], [], []
    for e in entries:
        if e.metrics is None:
            reason = ("predictions.jsonl but no metrics.json (run: python -m vlm metrics …/predictions.jsonl)"
                      if e.has_predictions else "eval_meta.json but no predictions.jsonl yet")
            incomplete.append({"variant": e.variant, "recipe": e.recipe, "mode": e.mode, "dir": e.rel,
                               "reason": reason})
            continue
        n = int(e.metrics["n"])
        if e.has_predictions:
            lines = sum(1 for ln in (e.dir / "predictions.jsonl").read_text(encoding="utf-8").split("\n") if ln.strip())
            if lines != n:
                warnings.append(f"{e.rel}: metrics.json has n={n} but predictions.jsonl has {lines} lines "
                                "(stale metrics?)")
        if is_num(e.meta.get("n")) and e.meta["n"] != n:
            warnings.append(f"{e.rel}: eval_meta.json expects n={e.meta['n']} but metrics.json has n={n}")
    order = study.variants if study else ()
    blind_only = blind_only_variants(entries, study)
    evaluated = {(e.variant, e.recipe) for e in entries}
    for variant, recipe in sorted(evaluated, key=lambda vr: (variant_rank(vr[0], order), vr[1])):
        if variant in blind_only:
            continue
        for m in MODES:
            if not any(e.variant == variant and e.recipe == recipe and e.mode == m for e in entries):
                missing.append({"variant": variant, "recipe": recipe, "mode": m, "reason": "no eval directory"})
    present = {e.variant for e in entries}
    missing += [{"variant": v, "recipe": None, "mode": None, "reason": "not evaluated in this run"}
                for v in order if v not in present]
    return incomplete, missing, warnings


def results_tables(entries: list[Entry], requested: str, scores: Scores, n_bootstrap: int, seed: int,
                   study: Study | None = None, trained: dict[str, dict] | None = None) -> dict[str, list]:
    """Every table of results.json, in the order report.md shows them."""
    return {
        "arms": arm_rows(entries, requested, scores, n_bootstrap, seed),
        "headline": headline_rows(entries, requested, scores, n_bootstrap, seed, study),
        "comparisons": comparison_rows(entries, study, trained or {}, requested, scores, n_bootstrap, seed),
        "overall": overall_rows(entries, scores, seed),
        "by_question_type": group_rows(entries, "by_question_type", requested),
        "by_change_type": group_rows(entries, "by_change_type", requested),
        "cot_vs_direct": cot_rows(entries, requested, scores, n_bootstrap, seed),
    }
