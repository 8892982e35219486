# Sourced by scripts/demo and scripts/test: make sure .venv holds the project and its dev tools.
# Reinstalls only when pyproject.toml changed. Needs python3 (>= 3.11); Java and Maven for Kafka.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
stamp="$venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setting up $venv (pip install -e '.[dev]', log in $venv/pip-install.log) ..." >&2
  python3 -m venv "$venv"
  # pip's output goes to the log, shown only on failure: an editable install always carries
  # setuptools' "Editable installation" notice, which is not a problem for the user to solve.
  if ! { "$venv/bin/python" -m pip install -q --upgrade pip \
         && "$venv/bin/python" -m pip install -q -e "$root[dev]"; } > "$venv/pip-install.log" 2>&1; then
    cat "$venv/pip-install.log" >&2
    echo "pip install failed (log above, kept in $venv/pip-install.log)" >&2
    exit 1
  fi
  rm -f "$venv"/.installed-* && touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
