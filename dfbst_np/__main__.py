import sys

try:
    from .cli import main
except KeyboardInterrupt:           # Ctrl-C while the modules load: nothing was started
    print("interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main(sys.argv[1:]))
