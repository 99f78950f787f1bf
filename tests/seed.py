"""The seed's example workflow: the repository's copy, kept identical to shared/."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "examples" / "user-registration-workflow.yaml"
SHARED_SEED = REPO.parent / "shared" / "examples" / "user-registration-workflow.yaml"
