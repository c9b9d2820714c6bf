"""Plugin discovery through real entry points, and every way it can go wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sat_toolkit.cli import cli
from sat_toolkit.errors import PluginConflictError, PluginLoadError, UnknownPluginError
from sat_toolkit.plugins import PluginHost, PluginWarning, get_plugin_host, reset_plugin_host

GOOD_PLUGIN = """
from torch import nn
from sat_toolkit.plugins import hookimpl

class Wobble(nn.Module):
    name = "wobble"
    description = "test activation"
    smooth = True
    def forward(self, x):
        return x * 2

@hookimpl
def sat_register_activations():
    return [Wobble]
"""

SILU_CLAIMER = """
from torch import nn
from sat_toolkit.plugins import hookimpl

class MySiLU(nn.Module):
    name = "silu"
    smooth = True
    def forward(self, x):
        return x

@hookimpl
def sat_register_activations():
    return [MySiLU]
"""


def test_builtins_register_through_their_entry_point(fresh_plugin_host: None) -> None:
    host = get_plugin_host()
    records = [r for r in host.records("activation") if r.kind == "activation"]
    expected = {
        "relu",
        "softplus",
        "parametric_softplus",
        "silu",
        "gelu",
        "elu",
        "celu",
        "smoothrelu",
        "relu_smooth_grad",
    }
    ours = [r for r in records if r.distribution == "smooth-adversarial-training"]
    assert expected <= {r.name for r in ours}
    assert all(r.entry_point.startswith("builtin-") for r in ours)
    assert host.get("activation", "silu").__module__ == "sat_toolkit.activations.builtin"


def test_third_party_plugin_is_discovered_with_distribution_and_version(fake_distribution) -> None:
    fake_distribution("wobble-acts", GOOD_PLUGIN, version="2.5")
    host = get_plugin_host()
    cls = host.get("activation", "wobble")
    assert cls.__name__ == "Wobble"
    (record,) = [r for r in host.records("activation") if r.name == "wobble"]
    assert (record.distribution, record.version, record.status) == ("wobble-acts", "2.5", "ok")


def test_a_plugin_taking_a_builtin_name_is_shadowed_and_reached_by_its_qualified_name(
    fake_distribution,
) -> None:
    """No package can take a built-in's name away: the bare name keeps meaning the built-in."""
    fake_distribution("silu-one", SILU_CLAIMER)
    with pytest.warns(PluginWarning) as caught:
        host = get_plugin_host()
    assert [str(w.message) for w in caught] == [
        "activation 'silu' from 'silu-one' has the name of a built-in, which keeps it; "
        "use this one as 'silu-one:silu'"
    ]
    assert host.get("activation", "silu").__module__ == "sat_toolkit.activations.builtin"
    assert host.get("activation", "silu-one:silu").__name__ == "MySiLU"
    assert host.get("activation", "Silu_One:silu").__name__ == "MySiLU"  # PEP 503 names
    builtin = host.get("activation", "smooth-adversarial-training:silu")
    assert builtin is host.get("activation", "silu")
    statuses = {r.distribution: r.status for r in host.records("activation") if r.name == "silu"}
    assert statuses == {"smooth-adversarial-training": "ok", "silu-one": "shadowed"}
    assert "silu" in host.names("activation") and "silu-one:silu" in host.names("activation")


def test_two_third_party_plugins_of_one_name_conflict_and_both_stay_usable(fake_distribution) -> None:
    fake_distribution("wobble-one", GOOD_PLUGIN)
    fake_distribution("wobble-two", GOOD_PLUGIN.replace("x * 2", "x * 3"))
    with pytest.warns(PluginWarning, match="'wobble-one:wobble' or 'wobble-two:wobble'"):
        host = get_plugin_host()
    with pytest.raises(PluginConflictError) as info:
        host.get("activation", "wobble")
    assert str(info.value) == (
        "activation 'wobble' is registered by both 'wobble-one' and 'wobble-two'; name the one you mean: "
        "'wobble-one:wobble' or 'wobble-two:wobble' (or uninstall one, or block it with "
        "SAT_TOOLKIT_DISABLE_PLUGINS=<distribution>)"
    )
    import torch

    x = torch.ones(2)
    assert host.get("activation", "wobble-one:wobble")()(x).tolist() == [2.0, 2.0]
    assert host.get("activation", "wobble-two:wobble")()(x).tolist() == [3.0, 3.0]
    assert host.get("activation", "gelu").name == "gelu"  # other names keep working


def test_plugin_raising_on_import_is_reported_not_fatal(fake_distribution) -> None:
    fake_distribution("broken-acts", "raise RuntimeError('numpy ABI mismatch')\n")
    with pytest.warns(PluginWarning, match="broken-acts.*numpy ABI mismatch"):
        host = get_plugin_host()
    assert host.get("activation", "silu").name == "silu"
    (failed,) = [r for r in host.records() if r.distribution == "broken-acts"]
    assert failed.status == "failed" and "RuntimeError: numpy ABI mismatch" in failed.error
    # A lookup that might need it fails and names the broken plugin.
    with pytest.raises(PluginLoadError, match="broken-acts.*numpy ABI mismatch"):
        host.get("activation", "mish")


def test_plugin_calling_sys_exit_on_import_is_a_failure_not_the_end_of_the_command(fake_distribution) -> None:
    """It ended every command silently with exit code 0: `recipe validate` printed nothing
    and a CI read "validated"."""
    fake_distribution("exiter", "import sys\nsys.exit(0)\n")
    with pytest.warns(PluginWarning, match=r"exiter.*failed to load: it called sys.exit\(0\)"):
        host = get_plugin_host()
    (failed,) = [r for r in host.records() if r.distribution == "exiter"]
    assert failed.status == "failed"
    assert host.get("activation", "silu").name == "silu"
    quickstart = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"
    result = CliRunner().invoke(cli, ["recipe", "validate", str(quickstart)])
    assert (result.exit_code, result.stdout) == (0, "ok\n")


def test_plugin_raising_in_its_hook_is_reported_per_kind(fake_distribution) -> None:
    fake_distribution(
        "hook-fails",
        """
        from sat_toolkit.plugins import hookimpl

        @hookimpl
        def sat_register_activations():
            raise ValueError("bad registration")
        """,
    )
    with pytest.warns(PluginWarning, match="failed to register its activations"):
        host = get_plugin_host()
    (failed,) = [r for r in host.records("activation") if r.distribution == "hook-fails"]
    assert failed.status == "failed" and failed.kind == "activation"
    assert host.get("activation", "elu").name == "elu"


def test_plugin_class_without_a_name_fails_registration(fake_distribution) -> None:
    fake_distribution(
        "nameless",
        """
        from torch import nn
        from sat_toolkit.plugins import hookimpl

        class NoName(nn.Module):
            pass

        @hookimpl
        def sat_register_activations():
            return [NoName]
        """,
    )
    with pytest.warns(PluginWarning, match="class attribute 'name'"):
        get_plugin_host()


@pytest.mark.parametrize("blocked", ["wobble-acts", "wobble_acts", "my-entry", "*", "all"])
def test_environment_variable_blocks_external_plugins(
    fake_distribution, monkeypatch: pytest.MonkeyPatch, blocked: str
) -> None:
    fake_distribution("wobble-acts", GOOD_PLUGIN, entry_point="my-entry")
    monkeypatch.setenv("SAT_TOOLKIT_DISABLE_PLUGINS", f"something-else, {blocked}")
    reset_plugin_host()
    with pytest.warns(PluginWarning, match="'something-else' matches no external plugin"):
        host = get_plugin_host()
    assert "wobble" not in host.names("activation")
    assert host.get("activation", "silu").name == "silu"  # built-ins are never blocked
    (record,) = [r for r in host.records() if r.distribution == "wobble-acts"]
    assert record.status == "blocked"
    # Asked for by name, the blocked package is named too: nothing else would hint at it.
    with pytest.raises(UnknownPluginError) as info:
        host.get("activation", "wobble")
    assert str(info.value).endswith(
        "Blocked by SAT_TOOLKIT_DISABLE_PLUGINS, so not looked into: 'wobble-acts' (take a package "
        "out of that variable to use its plugins)"
    )


def test_blocking_skips_the_import_of_a_broken_plugin(fake_distribution, monkeypatch) -> None:
    fake_distribution("broken-acts", "raise RuntimeError('boom')\n")
    monkeypatch.setenv("SAT_TOOLKIT_DISABLE_PLUGINS", "broken-acts")
    reset_plugin_host()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        host = get_plugin_host()
    assert host.get("activation", "silu").name == "silu"


def test_unknown_name_lists_known_names_and_closest_match(fresh_plugin_host: None) -> None:
    with pytest.raises(UnknownPluginError) as info:
        get_plugin_host().get("activation", "siluu")
    message = str(info.value)
    assert "Did you mean 'silu'?" in message
    for name in ("relu", "gelu", "smoothrelu", "softplus"):
        assert name in message


@pytest.mark.parametrize(
    ("kind", "asked", "meant"),
    [
        ("activation", "swish", "silu"),  # another name, declared in silu's also_known_as
        ("activation", "Swish", "silu"),
        ("activation", "SiLU", "silu"),  # the paper's spelling, not a typo
        ("attack", "PGD", "pgd"),
        ("activation", "smooth_relu", "smoothrelu"),
    ],
)
def test_unknown_name_suggests_the_name_meant_whatever_its_case_or_other_name(
    fresh_plugin_host: None, kind: str, asked: str, meant: str
) -> None:
    with pytest.raises(UnknownPluginError) as info:
        get_plugin_host().get(kind, asked)
    assert f"unknown {kind} '{asked}'. Did you mean '{meant}'?" in str(info.value)


def test_a_name_close_to_nothing_gets_no_suggestion(fresh_plugin_host: None) -> None:
    with pytest.raises(UnknownPluginError) as info:
        get_plugin_host().get("activation", "leaky_relu")
    assert "Did you mean" not in str(info.value)


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError):
        PluginHost(entry_points=[]).get("optimizer", "sgd")


def test_cli_plugins_table_shows_kind_name_distribution_version_status(fake_distribution) -> None:
    fake_distribution("wobble-acts", GOOD_PLUGIN, version="2.5")
    fake_distribution("broken-acts", "raise ImportError('no module named torchx')\n")
    with pytest.warns(PluginWarning, match="broken-acts.*torchx"):
        result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["kind", "name", "distribution", "version", "status"]
    wobble = next(line for line in lines if " wobble " in line)
    assert wobble.split()[:5] == ["activation", "wobble", "wobble-acts", "2.5", "ok"]
    broken = next(line for line in lines if "broken-acts" in line)
    assert "failed" in broken and "torchx" in broken


def test_cli_unknown_activation_is_one_line_exit_2(fresh_plugin_host: None) -> None:
    result = CliRunner().invoke(cli, ["activations", "--plot", "x.png", "--only", "swishh"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "unknown activation 'swishh'" in result.output


def test_a_misspelt_block_warns_with_the_closest_installed_name(fake_distribution, monkeypatch) -> None:
    """A typo in SAT_TOOLKIT_DISABLE_PLUGINS used to block nothing without a word."""
    fake_distribution("wobble-acts", GOOD_PLUGIN, entry_point="my-entry")
    monkeypatch.setenv("SAT_TOOLKIT_DISABLE_PLUGINS", "wobble-act")
    reset_plugin_host()
    with pytest.warns(PluginWarning) as caught:
        host = get_plugin_host()
    messages = [str(w.message) for w in caught]
    assert messages == [
        "SAT_TOOLKIT_DISABLE_PLUGINS: 'wobble-act' matches no external plugin, so it blocks nothing; "
        "did you mean 'wobble-acts'?"
    ]
    assert "wobble" in host.names("activation")  # not blocked, as the warning says


def test_plugin_warnings_are_said_by_the_main_process_alone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under accelerate launch every process meets the same plugin note (a 2-process walk saw
    each doubled); RANK names the process."""
    from sat_toolkit.cli import _show_plugin_warning

    for rank, shown in (("0", True), ("1", False)):
        monkeypatch.setenv("RANK", rank)
        _show_plugin_warning("dropped 'warmup_fraction'", PluginWarning, "x.py", 1)
        assert ("dropped 'warmup_fraction'" in capsys.readouterr().err) is shown, rank
