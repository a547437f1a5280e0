# Shared by scripts/serve and scripts/test (sourced, not run): one .venv for both.
#
#   heimbuero_install_project   install heimbuero (editable) into .venv, again only when
#                               pyproject.toml changed since the last install
#   heimbuero_install_tests     add the test extras of pyproject.toml, again only when
#                               pyproject.toml changed; never reinstalls the project itself
#
# Both expect the working directory to be the repository root and .venv to exist.

heimbuero_pyproject_hash() {
    sha256sum pyproject.toml | cut -d' ' -f1
}

heimbuero_install_project() {
    local stamp=.venv/.heimbuero-installed want
    want=$(heimbuero_pyproject_hash)
    if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
        echo "$1: installing heimbuero into .venv"
        .venv/bin/python -m pip install --quiet --upgrade pip
        .venv/bin/python -m pip install --quiet -e .
        echo "$want" >"$stamp"
    fi
}

heimbuero_install_tests() {
    local stamp=.venv/.heimbuero-test-installed want
    want=$(heimbuero_pyproject_hash)
    if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
        echo "$1: installing the test dependencies into .venv"
        .venv/bin/python - <<'PY' >.venv/.heimbuero-test-requirements.txt
import tomllib

with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["test"]))
PY
        .venv/bin/python -m pip install --quiet -r .venv/.heimbuero-test-requirements.txt
        echo "$want" >"$stamp"
    fi
}
