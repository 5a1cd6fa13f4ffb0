from __future__ import annotations

from pathlib import Path

import pytest

from x0tta.identity.ca import CertificateAuthority

TD = "mesh.x0tta"


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path_factory.mktemp("ca") / "ca", TD)


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path_factory.mktemp("other") / "ca", "other.org")


@pytest.fixture(scope="session")
def impostor_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    """Same trust domain and root name as ``ca``, different key: what an attacker would mint."""
    return CertificateAuthority.init(tmp_path_factory.mktemp("impostor") / "ca", TD)


@pytest.fixture
def fresh_ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "ca", TD)
