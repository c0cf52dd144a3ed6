"""``python -m pgsl_flower.pilot credentials --out DIR --sites A B C [--hosts H ...]``

Writes the pilot's CA, the SuperLink certificate and one SuperNode key pair per
site (see ``docs/pilot.md``). ``site-key`` adds a site's key pair later.
``site-worker --socket PATH`` runs a site's long-lived worker
(:mod:`pgsl_flower.pilot.site_worker`; node-config ``site-worker`` = PATH).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pgsl_flower.pilot.credentials import make_credentials, make_site_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgsl_flower.pilot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    creds = commands.add_parser("credentials", help="CA, SuperLink certificate, site key pairs")
    creds.add_argument("--out", required=True)
    creds.add_argument("--sites", nargs="+", required=True, help="site names (file names of their keys)")
    creds.add_argument("--hosts", nargs="+", default=["127.0.0.1", "localhost"],
                       help="names/IPs the sites use to reach the SuperLink (certificate SAN)")
    creds.add_argument("--days", type=int, default=365)
    site = commands.add_parser("site-key", help="one more site's SuperNode key pair")
    site.add_argument("--out", required=True)
    site.add_argument("--site", required=True)
    worker = commands.add_parser("site-worker", help="a site's long-lived process that runs its ClientApp handlers")
    worker.add_argument("--socket", required=True, help="the Unix socket to serve (node-config 'site-worker')")
    args = parser.parse_args(argv)
    try:
        if args.command == "site-worker":
            from pgsl_flower.pilot.site_worker import serve

            serve(Path(args.socket))
        elif args.command == "credentials":
            made = make_credentials(args.out, args.sites, args.hosts, args.days)
            print(f"CA certificate (give to every site):   {made.ca_cert}")
            print(f"SuperLink certificate and key:         {made.superlink_cert} {made.superlink_key}")
            for name, (private, public) in made.site_keys.items():
                print(f"site {name}: private key (stays at the site) {private}, public key (register) {public}")
        else:
            private, public = make_site_key(args.out, args.site)
            print(f"site {args.site}: private key {private}, public key {public}")
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
