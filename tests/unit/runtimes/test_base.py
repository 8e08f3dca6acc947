"""`runtimes.base.Runtime`: the interface every plug-in implements, and its defaults.

A toy third runtime is written here the way the README's "add a runtime" asks: only the abstract
methods; everything else comes from the base class. These tests pin what those defaults answer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from nodeagent.artifacts.digest import Digest
from nodeagent.artifacts.release import ArtifactFile, Release
from nodeagent.host import HostRoot
from nodeagent.runtimes.base import ConfigContext, ConfigFile, Runtime, RuntimeClassSpec, VerifyContext
from nodeagent.settings import Settings

ABSTRACT = {"options", "version", "handler_specs", "eligibility", "check_version", "upstream_arch", "mirror_relpath",
            "pinned_layouts", "resolve", "is_archive", "unpack", "check_archive", "links", "runtime_classes", "verify"}


class Toy(Runtime):
    """Only the abstract methods; `options` remembers the Settings it was given."""

    name = "toy"
    title = "Toy"

    def options(self, settings):
        return ("toy-options", settings.health_timeout)

    def version(self, opts):
        return "1.0"

    def handler_specs(self, opts):
        return []

    def eligibility(self, facts):
        return {"eligible": True, "reasons": []}

    def check_version(self, version):
        return version

    def upstream_arch(self, arch):
        return arch

    def mirror_relpath(self, version, arch, name):
        return f"toy/{version}/{name}"

    def pinned_layouts(self, version, arch):
        return []

    def resolve(self, fetcher, version, arch, mirror, flag, pins, listing=""):
        raise NotImplementedError

    def is_archive(self, release):
        return False

    def unpack(self, release, cache, staging, limits):
        return staging

    def check_archive(self, release, path, limits):
        return None

    def links(self, base):
        return {"/usr/local/bin/toy": f"{base}/toy"}

    def runtime_classes(self, opts):
        return []

    def verify(self, ctx, opts):
        raise NotImplementedError


def test_the_abstract_methods_are_exactly_the_ones_a_runtime_must_write():
    assert Runtime.__abstractmethods__ == ABSTRACT


def test_a_runtime_missing_one_method_cannot_be_made():
    Partial = type("Partial", (Toy,), {"links": Runtime.links})
    with pytest.raises(TypeError, match="links"):
        Partial()


def test_defaults_of_a_new_runtime():
    toy = Toy()
    assert repr(toy) == "<runtime toy>"
    assert toy.digest_flag is None and toy.config_roles == ()
    assert toy.default_options() == ("toy-options", 60.0)  # options(Settings()): the defaults
    assert toy.operator_digest(toy.default_options()) is None
    assert toy.handlers_named("toy") == []
    assert toy.config_files(lambda p: b"", ConfigContext({}, False), None) == []
    assert toy.builtin_digest("1.0", "amd64") is False
    assert toy.owns_link("/usr/local/bin/toy", "/elsewhere/toy") is False


def test_the_release_name_defaults_to_the_version():
    release = Release("toy", "1.0", "amd64", "toy-files", (ArtifactFile("toy", Digest("sha256", "a" * 64), None),))
    assert Toy().release_name(release, Path("/nonexistent")) == "1.0"


def test_the_value_objects():
    spec = RuntimeClassSpec("toy", "toy-handler", "toy")
    assert (spec.memory, spec.cpu, spec.tolerations) == (None, None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        ConfigFile("/etc/x", "x", b"").new = b"y"
    ctx = VerifyContext(HostRoot("/"), None, lambda: "/run/containerd/containerd.sock")
    assert (ctx.timeout, ctx.explicit, ctx.socket()) == (60.0, False, "/run/containerd/containerd.sock")
