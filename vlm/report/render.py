"""report.md, rendered from results.json alone (nothing here reads the run dir)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlm.report.collect import MODES, NO_RECIPE
from vlm.report.tables import REASONING


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}"


def _fmt4(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"


def _with_ci(c: dict[str, Any] | None, key: str = "value") -> str:
    if not c or c.get(key) is None:
        return "-"
    ci = c.get("ci")
    return f"{c[key]:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci and None not in ci else "")


def md_table(headers: list[str], rows: list[list[str]], left: int = 1, left_tail: int = 1) -> list[str]:
    """A markdown table padded to fixed column widths (readable as plain text). Text columns (the first
    ``left`` and the last ``left_tail``) are left-aligned, numbers right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    is_left = [i < left or i >= len(headers) - left_tail for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if lft else c.rjust(w) for c, w, lft in zip(cells, widths, is_left)) + " |"

    sep = "|" + "|".join(("-" * (w + 2)) if lft else ("-" * (w + 1) + ":") for w, lft in zip(widths, is_left)) + "|"
    return [line(headers), sep, *(line(r) for r in rows)]


def _multi(results: dict[str, Any], key: str) -> bool:
    return len({r[key] for r in results["tables"]["overall"]}) > 1


def row_label(r: dict[str, Any], results: dict[str, Any]) -> str:
    """variant, plus recipe / benchmark only when the run has several (the plots' x labels too)."""
    parts = [r["variant"]]
    if _multi(results, "recipe") and r["recipe"] != NO_RECIPE:
        parts.append(r["recipe"])
    if _multi(results, "benchmark"):
        parts.append(r["benchmark"])
    return " / ".join(parts)


def _label_headers(results: dict[str, Any]) -> list[str]:
    """variant, plus recipe / benchmark columns only when the run has several."""
    return ["variant"] + [k for k in ("recipe", "benchmark") if _multi(results, k)]


def _label_cells(r: dict[str, Any], results: dict[str, Any]) -> list[str]:
    return [r[k] for k in _label_headers(results)]


def _gap(gap: dict[str, Any]) -> str:
    return _num(gap.get("value")) + (f" [{gap['ci'][0]:.1f}, {gap['ci'][1]:.1f}]" if gap.get("ci") else "")


def _srcs(*cells: dict[str, Any] | None) -> str:
    return ", ".join(c["src"] for c in cells if c)


def headline_table(results: dict[str, Any]) -> list[str]:
    recovered = any("gap_recovered" in r for r in results["tables"]["headline"])  # the study declares its pair
    rows = []
    for r in results["tables"]["headline"]:
        gap = r["gap"] or {}
        rows.append(_label_cells(r, results) + [
            r["metric"],
            _with_ci(r["normal"]), str(r["normal"]["n"]) if r["normal"] else "-",
            _with_ci(r["blind"]), str(r["blind"]["n"]) if r["blind"] else "-",
            _gap(gap), str(gap["n_paired"]) if gap else "-",
            *([_recovered(r.get("gap_recovered"))] if recovered else []), _srcs(r["normal"], r["blind"]),
        ])
    labels = _label_headers(results)
    headers = labels + ["metric", "normal", "n", "blind", "n", "gap (normal - blind)", "n paired",
                        *(["gap recovered %"] if recovered else []), "src"]
    return md_table(headers, rows, left=len(labels) + 1)


def _recovered(g: dict[str, Any] | None) -> str:
    return "n/a" if not g or g["value"] is None else f"{g['value']:.1f}"


def _provenance_section(prov: dict[str, Any], study: dict[str, Any] | None) -> list[str]:
    out = ["## Provenance", ""]
    if prov.get("error"):
        out += [f"- manifest.json: {prov['error']}"]
    else:
        commit = prov.get("git_commit")
        out += [f"- git commit: {commit or '?'}" + (" (dirty)" if prov.get("git_dirty") else "")]
        out += [f"- started: {prov['start_time']}"] if prov.get("start_time") else []
        out += [f"- command: `{prov['command']}`"] if prov.get("command") else []
        out += [f"- seed: {prov['seed']}"] if prov.get("seed") is not None else []
        if prov.get("stages"):
            stages = (" ".join(x for x in (s["name"], s["status"], f"{_num(s['wall_s'])} s") if x)
                      for s in prov["stages"])
            out += ["- stages: " + ", ".join(stages)]
    if study:
        blind_only = f" (blind only: {', '.join(study['blind_only'])})" if study["blind_only"] else ""
        out += [f"- study variants: {', '.join(study['variants'])}{blind_only}"]
    return out + [""]


def _arms_section(results: dict[str, Any]) -> list[str]:
    rows_in = results["tables"]["arms"]
    others = list(dict.fromkeys(k for r in rows_in for k in r["other_metrics"]))
    rows = []
    for r in rows_in:
        rows.append([r["arm"], r["variant"], r["recipe"], r["metric"], _with_ci(r["normal"]),
                     str(r["normal"]["n"]) if r["normal"] else "-", _with_ci(r["blind"]), _gap(r["gap"] or {}),
                     _num(r[REASONING]["normal"]), *(_num(r["other_metrics"].get(k)) for k in others),
                     _srcs(r["normal"], r["blind"])])
    headers = ["arm", "model", "recipe", "metric", "normal", "n", "blind", "gap (normal - blind)", "reasoning %",
               *others, "src"]
    return ["## Arms", ""] + md_table(headers, rows, left=4) + [
        "", "reasoning %: share of normal-mode outputs with a non-empty reasoning part (a <REASONING> tag's text, "
        f"else the outputs of the phases before the answer); {', '.join(others) or 'other metrics'}: normal mode.", ""]


def _headline_section(results: dict[str, Any]) -> list[str]:
    t = results["tables"]
    out = ["## Headline: normal vs blind", ""]
    if not t["headline"]:
        return out + ["No evaluation with a metrics.json in eval/.", ""]
    out += headline_table(results)
    out += ["", f"gap CI: paired bootstrap ({results['n_bootstrap']} resamples, seed {results['seed']}) over the "
                "ids evaluated in both modes, per-sample scores recomputed from the predictions.jsonl next to "
                "each metrics.json."]
    odd = [r for r in t["headline"] if r["gap"] and r["gap"]["n_paired"] < max(r["normal"]["n"], r["blind"]["n"])]
    for r in odd:
        out.append(f"Note: {row_label(r, results)}: only {r['gap']['n_paired']} ids in both modes; the gap is the "
                   f"difference of the full-set values, its CI (paired mean {_num(r['gap']['mean'])}) is over "
                   "the shared ids.")
    for r in t["headline"]:
        if r["gap"] and r["gap"].get("note"):
            out.append(f"Note: {row_label(r, results)}: no gap CI ({r['gap']['note']}).")
    if ends := (results.get("study") or {}).get("gap_recovered"):
        out += ["", f"gap recovered %: (variant - {ends['low']}) / ({ends['high']} - {ends['low']}) x 100, normal "
                    "mode, with the row's recipe and metric (the pair is declared in manifest.json): 0 = "
                    f"{ends['low']}, 100 = {ends['high']}."]
        for r in t["headline"]:  # a row without a normal value (blind only) needs no note
            if r["normal"] and r.get("gap_recovered", {}).get("note"):
                out.append(f"Note: {row_label(r, results)}: gap recovered "
                           f"{_recovered(r['gap_recovered'])}: {r['gap_recovered']['note']}.")
    return out + [""]


def _comparisons_section(results: dict[str, Any]) -> list[str]:
    rows_in = results["tables"]["comparisons"]
    bench = ["benchmark"] if _multi(results, "benchmark") else []
    rows = []
    for r in rows_in:
        d = r["diff"] or {}
        rows.append([r[k] for k in bench] + [
            f"{r['a']} - {r['b']}", r["mode"], r["metric"], r["a_recipe"], r["b_recipe"], _with_ci(r["a_value"]),
            _with_ci(r["b_value"]), _gap(d) if d else "-", str(d["n_paired"]) if d else "-",
            _srcs(r["a_value"], r["b_value"])])
    headers = bench + ["A - B", "mode", "metric", "recipe A", "recipe B", "A", "B", "A - B (paired CI)", "n paired",
                       "src"]
    out = ["## Comparisons (declared in manifest.json)", ""] + md_table(headers, rows, left=len(bench) + 5)
    out += ["", "Each side on the recipe it was trained on (`recipe_resolved` in train/<variant>/train_config.json); "
                "a side never trained (zero-shot) on the other side's recipe; neither trained: each recipe both "
                f"were evaluated on. A - B: the full-set values' difference; CI: paired bootstrap "
                f"({results['n_bootstrap']} resamples, seed {results['seed']}) over the ids both were evaluated on. "
                "Each variant's normal - blind gap, paired CI: the headline table."]
    recipes = dict.fromkeys((r[side], r[f"{side}_recipe"], r["recipe_from"][side]) for r in rows_in for side in "ab")
    out += [f"- recipe of {v}: {recipe} ({why})" for v, recipe, why in recipes]
    for r in rows_in:
        d, label = r["diff"], f"{r['a']} - {r['b']} ({r['mode']})"
        if d is None:
            out.append(f"Note: {label}: only one side was evaluated.")
        elif d.get("note"):
            out.append(f"Note: {label}: no CI ({d['note']}).")
        elif d["n_paired"] < max(r["a_value"]["n"], r["b_value"]["n"]):
            out.append(f"Note: {label}: only {d['n_paired']} ids in both; the CI (paired mean {_num(d['mean'])}) is "
                       "over those.")
    return out + [""]


def _overall_section(results: dict[str, Any]) -> list[str]:
    rows_in = results["tables"]["overall"]
    metrics = list(dict.fromkeys(m for r in rows_in for m in r["metrics"]))
    rows = [_label_cells(r, results) + [r["mode"], str(r["n"])]
            + [_with_ci(r["metrics"].get(m)) for m in metrics] + [r["src"]] for r in rows_in]
    labels = _label_headers(results) + ["mode"]
    return ["## All overall metrics", ""] + md_table(labels + ["n"] + metrics + ["src"], rows, left=len(labels)) + [""]


def _group_section(results: dict[str, Any], key: str, title: str) -> list[str]:
    rows_in = results["tables"][key]
    names = list(dict.fromkeys(g for r in rows_in for g in r["groups"]))
    # n in the header when every cell agrees (the usual case: one test split), else in each cell
    ns = {g: {c["n"] for r in rows_in for c in r["groups"].get(g, {}).values() if c} for g in names}
    metric = "/".join(sorted({r["metric"] for r in rows_in}))
    any_blind = any(c["blind"] for r in rows_in for c in r["groups"].values())
    out = [f"## {title} ({metric}, normal{' / blind' if any_blind else ''})", ""]
    group_headers = [f"{g} (n={next(iter(ns[g]))})" if len(ns[g]) == 1 else g for g in names]
    headers = _label_headers(results) + group_headers + ["src"]
    rows = []
    for r in rows_in:
        cells = []
        for g in names:
            parts = []
            for m in MODES:
                c = r["groups"].get(g, {}).get(m)
                if m == "blind" and not any_blind:
                    continue
                parts.append("-" if not c else _num(c["value"]) + ("" if len(ns[g]) == 1 else f" (n={c['n']})"))
            cells.append(" / ".join(parts))
        rows.append(_label_cells(r, results) + cells + [", ".join(r["src"].values())])
    return out + md_table(headers, rows, left=len(_label_headers(results))) + [""]


def _cot_section(results: dict[str, Any]) -> list[str]:
    rows = [[r["variant"], r["recipe"], r["mode"], r["metric"], _with_ci(r["direct"]), _with_ci(r["cot"]),
             _with_ci(r["diff"]), str(r["diff"]["n_paired"]),
             *(_num(r.get(REASONING, {}).get(k)) for k in ("direct", "cot")), ", ".join(r["diff"]["src"])]
            for r in results["tables"]["cot_vs_direct"]]
    headers = ["variant", "recipe", "mode", "metric", "direct", "recipe", "recipe - direct", "n paired",
               "reasoning % direct", "reasoning % recipe", "src"]
    return (["## Reasoning recipe vs direct (paired on shared ids)", ""] + md_table(headers, rows, left=4)
            + ["", "reasoning %: share of outputs with a non-empty reasoning part (a <REASONING> tag's text, else "
               "the outputs of the phases before the answer).", ""])


def _training_section(results: dict[str, Any]) -> list[str]:
    if not results["training"]:
        return ["## Training", "", "No train/*/trainer_log.jsonl in this run.", ""]
    rows = []
    for r in results["training"]:
        s = r["series"].get("loss", {})
        extra = ", ".join(k for k in r["series"] if k != "loss")
        losses = [_fmt4(s.get(k)) for k in ("first", "last", "min", "last_step")]
        rows.append([r["name"], str(s.get("n", 0)), *losses, _num(r["train_runtime_s"]), extra or "-", r["source"]])
    headers = ["run", "points", "first loss", "last loss", "min loss", "last step", "runtime s", "also logged",
               "source"]
    return ["## Training", ""] + md_table(headers, rows, left_tail=2) + [""]


def _status_section(results: dict[str, Any]) -> list[str]:
    out = ["## Incomplete and missing", ""]
    out += [f"- incomplete: {i['dir']}: {i['reason']}" for i in results["incomplete"]]
    out += [f"- missing: {m['variant']}" + (f"/{m['recipe']}/{m['mode']}" if m["mode"] else "") + f": {m['reason']}"
            for m in results["missing"]]
    out += [f"- warning: {w}" for w in results["warnings"]]
    return out + [""]


def _sources_section(results: dict[str, Any]) -> list[str]:
    out = ["## Sources", ""]
    for k, s in results["sources"].items():
        about = [f"n={s['n']}"] + [f"{x} {s[x]}" for x in ("model", "adapter") if s.get(x)]
        out.append(f"- {k}: `{s['metrics']}` ({', '.join(about)})")
    return out + [""]


def render_markdown(results: dict[str, Any]) -> str:
    conf = int(round(100 * results["confidence"]))
    t = results["tables"]
    out = [f"# Report: {Path(results['run_dir']).name}", ""]
    out += [f"Values in percent. `[a, b]` = {conf}% bootstrap CI; `n` = samples per cell; `src` = the metrics.json "
            "each number comes from (list at the end). Generated by `python -m vlm report` from `results.json`.", ""]
    if results.get("provenance"):
        out += _provenance_section(results["provenance"], results.get("study"))
    if t.get("arms"):
        out += _arms_section(results)
    out += _headline_section(results)
    if t.get("comparisons"):
        out += _comparisons_section(results)
    if t["overall"]:
        out += _overall_section(results)
    for key, title in (("by_question_type", "Per question type"), ("by_change_type", "Per change type")):
        if t[key]:
            out += _group_section(results, key, title)
    if t["cot_vs_direct"]:
        out += _cot_section(results)
    out += _training_section(results)
    out += ["## Plots", ""]
    for name, info in results["plots"].items():
        out.append(f"![{name}]({info['file']})" if info.get("file") else f"- {name}.png skipped: {info['skipped']}")
    out.append("")
    if results["incomplete"] or results["missing"] or results["warnings"]:
        out += _status_section(results)
    if results["sources"]:
        out += _sources_section(results)
    return "\n".join(out)
