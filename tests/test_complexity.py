"""Complexity CLI and the published-figure check (docs/paper.md: Published numbers and their provenance)."""
import json

import pytest

from replicate import published
from replicate.complexity import check_entry
from replicate.complexity import main as complexity_main
from replicate.published import Printed


def test_cli_json_has_integer_counts(capsys):
    assert complexity_main(["ResNet32-S16U1", "ResNet32", "--dataset", "cifar10", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == ["ResNet32-S16U1", "ResNet32"]
    first = rows[0]
    assert {k: first[k] for k in ("params", "macs", "conv_linear_macs")} == {
        "params": 197_258, "macs": 80_183_936, "conv_linear_macs": 79_086_208}  # docs/paper.md: The networks
    assert first["flops"] == 2 * first["macs"] and all(isinstance(first[k], int) for k in ("params", "flops"))


def test_cli_bad_name_is_one_line_and_nonzero(capsys):
    assert complexity_main(["ResNet33", "--dataset", "cifar10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_printed_figures_match_at_their_precision():
    assert Printed("0.20M").matches(197_258) and not Printed("0.20M").matches(205_001)
    assert Printed("19.3M").matches(19_333_380) and Printed("2.33G").matches(2.334e9)
    assert Printed("8.45M").matches(8_476_196, tolerance=0.05) and not Printed("8.45M").matches(8_476_196)


def test_flag_only_excuses_the_figures_it_concerns():
    entry = next(e for e in published.load() if e.label == "ResNet56-S16U1" and e.source == "f98cd9d")
    assert check_entry(entry, 270_842, 147_976_832)["verdict"] == "flagged"
    assert check_entry(entry, 270_842, 200_000_000)["verdict"] == "mismatch"  # FLOPs are not flagged


def test_published_data_has_provenance_for_every_entry():
    entries = published.load()
    assert len(entries) >= 50
    assert {e.source for e in entries} == {"740baba", "f98cd9d", "8fdd8c0", "936a886", "f98cd9d-graph"}
    assert all(e.date and e.flops_convention in ("2xMACs", "MACs") for e in entries)
    swapped = published.find("DenseNet121-S16U1", "cifar100")
    assert swapped and all(e.label == "DenseNet121-S64U4" and e.flag["kind"] == "label-swap" for e in swapped)


def test_every_published_figure_matches_or_is_flagged(capsys):
    assert complexity_main(["--published", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "mismatch" not in out and out.count("flagged") == 16
    assert complexity_main(["--published"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "63 published entries: 47 match, 16 flagged (explained), 0 mismatch"
    assert max(len(line) for line in lines) <= 120 and lines[-2].startswith("    ")  # footnotes, wrapped


def _fresh_equals_cached(models) -> None:
    from replicate import complexity

    cached = complexity.cached()
    for model in models:
        assert cached[model] == complexity.measure(model), model


def test_the_cache_covers_exactly_the_networks_the_suite_trains_and_counts_them_as_measured():
    """The committed cache (``python -m replicate.goldens``) against fresh counts: every option that changes a
    network (sharing depth, no unshared BN, the mini profile's depth) included."""
    from replicate import complexity, goldens
    from replicate.models import ModelSpec

    trained = goldens.trained_models()
    assert set(trained) == set(complexity.cached())
    _fresh_equals_cached([ModelSpec("ResNet56-S16U1", "cifar10", sharing_depth=2),
                          ModelSpec("ResNet20-S16U1", "cifar10", unshared_bn=False),
                          ModelSpec("ResNet34-S16U1", "cifar100", unshared_bn=False),
                          ModelSpec("DenseNet121-S16U1", "cifar100"), ModelSpec("MobileNetV2-Shared", "cifar100")])


@pytest.mark.slow
def test_every_cached_count_equals_a_fresh_measurement():
    from replicate import goldens

    _fresh_equals_cached(goldens.trained_models())


@pytest.mark.parametrize("name,dataset", [("ResNet56-U1", "cifar10"), ("ResNet32-U1", "cifar10"),
                                          ("ResNet34-U1", "cifar100")])
def test_rank_one_bases_are_counted_like_every_other_rank(name, dataset, capsys):
    assert complexity_main([name, "--dataset", dataset, "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["params"] > 0 and row["conv_linear_macs"] < row["macs"]
