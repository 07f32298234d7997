"""rudder's command line: `rudder run | get | reconcile | suspend | resume | history | diff |
approve | version | crd` (`python -m rudder ...` is the same)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rudder import __version__
from rudder.config import OperatorConfig
from rudder.model import parse_duration, parse_size

if TYPE_CHECKING:
    from rudder.cli.kubeconfig import Target as KubeTarget
    from rudder.kube.client import KubeClient

# Where the container image puts the kustomize module (see the Dockerfile).
DEFAULT_KUSTOMIZE_MODULE = "/usr/local/lib/rudder/kustomize.wasm"
CRD_FILE = Path(__file__).resolve().parent.parent.parent / "crds" / "helmreleases.rudder.dev.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rudder",
        description="Reconcile rudder.dev/v1alpha1 HelmRelease resources the Helm 4 way.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="run the operator",
        description=(
            "Run the operator. Credentials come from the in-cluster service account, "
            "$KUBECONFIG, or ~/.kube/config, in that order (or --kubeconfig)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run.add_argument("--kubeconfig", help="kubeconfig file to use instead of the default lookup")
    run.add_argument(
        "--namespace",
        action="append",
        default=[],
        dest="namespaces",
        metavar="NS",
        help="watch HelmReleases in this namespace only; repeat for several (default: all)",
    )
    run.add_argument(
        "--selector",
        default=None,
        help="label selector: serve only HelmReleases that match it (filtered by the API server)",
    )
    run.add_argument(
        "--field-manager", default="rudder", help="field manager name for server-side apply"
    )
    run.add_argument(
        "--concurrency", type=int, default=16, help="HelmReleases reconciled in parallel"
    )
    run.add_argument(
        "--kube-api-qps",
        type=float,
        default=OperatorConfig.kube_api_qps,
        help="client-side limit on API requests/s (0: none)",
    )
    run.add_argument(
        "--kube-api-burst",
        type=int,
        default=OperatorConfig.kube_api_burst,
        help="requests allowed above the QPS in a burst",
    )
    run.add_argument(
        "--chart-cache-dir",
        default="/var/cache/rudder/charts",
        help="directory of the content-addressed chart cache",
    )
    run.add_argument(
        "--chart-cache-size",
        type=parse_size,
        default="1Gi",
        help="chart cache bound; least recently used charts are evicted beyond it",
    )
    run.add_argument(
        "--max-chart-size",
        type=parse_size,
        default="10Mi",
        help="largest compressed chart archive accepted (uncompressed limit is 10x)",
    )
    run.add_argument(
        "--max-index-size",
        type=parse_size,
        default="64Mi",
        help="largest index.yaml of an HTTP chart repository accepted",
    )
    run.add_argument(
        "--takeover-managers",
        default="helm",
        help="comma-separated field managers whose fields rudder takes back on its objects",
    )
    run.add_argument(
        "--drift-managers",
        default="kubectl,kubectl-edit,kubectl-client-side-apply,kubectl-patch,kubectl-set,"
        "kubectl-scale,helm",
        help="comma-separated field managers whose edits count as drift",
    )
    run.add_argument(
        "--metrics-addr",
        default=":8080",
        help="host:port serving /metrics, /healthz, /readyz and the status page at /",
    )
    run.add_argument(
        "--leader-elect",
        action="store_true",
        help="run several replicas: only the holder of a coordination.k8s.io Lease reconciles",
    )
    run.add_argument(
        "--leader-election-namespace", default="rudder-system", help="namespace of the Lease"
    )
    run.add_argument("--leader-election-id", default="rudder-leader", help="name of the Lease")
    run.add_argument(
        "--lease-duration",
        type=parse_duration,
        default="15s",
        help="how long a standby waits on a silent leader before taking over",
    )
    run.add_argument(
        "--renew-deadline",
        type=parse_duration,
        default="10s",
        help="a leader that could not renew for this long stops (and exits)",
    )
    run.add_argument(
        "--retry-period", type=parse_duration, default="2s", help="renew / retry interval"
    )
    run.add_argument(
        "--default-service-account",
        default=None,
        metavar="NAME",
        help="impersonate this ServiceAccount (of the HelmRelease's namespace) when "
        "spec.serviceAccountName is empty; without it rudder acts with its own rights",
    )
    run.add_argument(
        "--no-cross-namespace-refs",
        action="store_true",
        help="refuse targetNamespace, storageNamespace and dependsOn outside the "
        "HelmRelease's namespace",
    )
    _post_renderer_flags(run)
    run.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="log line format"
    )
    run.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity",
    )

    run.add_argument(
        "--no-page-previews",
        action="store_true",
        help="do not serve /releases/<ns>/<name>/preview on the status page (it shows the "
        "contents of rendered objects, Secret data masked, to whoever reaches the port)",
    )
    run.add_argument(
        "--allow-kubeconfig-exec",
        action="store_true",
        help="let spec.kubeConfig kubeconfigs use exec credential plugins and auth providers "
        "(they run programs in rudder's pod; off: such kubeconfigs are refused)",
    )

    _user_commands(commands)
    commands.add_parser("version", help="print rudder's version and the embedded Helm's")
    commands.add_parser("crd", help="print the HelmRelease CustomResourceDefinition (YAML)")
    return parser


def _user_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """kubectl-style commands on the caller's own credentials (kubectl's kubeconfig rules)."""

    def command(name: str, help: str, *, named: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        sub.add_argument(
            "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
        )
        sub.add_argument("--context", help="kubeconfig context (default: the current one)")
        sub.add_argument("-n", "--namespace", help="namespace (default: the context's)")
        if named:
            sub.add_argument("name", help="the HelmRelease")
        return sub

    listing = command(
        "get", "list HelmReleases: Ready, reason, revision, chart, digest, age", named=False
    )
    listing.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    requested = command("reconcile", "ask rudder to reconcile a HelmRelease now")
    requested.add_argument("--wait", action="store_true", help="follow it until Ready is known")
    requested.add_argument("--timeout", type=_positive_duration, default="5m", help="for --wait")
    command("suspend", "stop reconciling a HelmRelease (spec.suspend: true)")
    command("resume", "reconcile a suspended HelmRelease again")
    command("history", "a HelmRelease's revisions, and who wrote each (rudder or the helm CLI)")
    diff = command(
        "diff",
        "what the next install or upgrade of a HelmRelease would change (exit 1: it differs)",
        named=False,
    )
    diff.add_argument("name", nargs="?", help="the HelmRelease (or -f)")
    diff.add_argument("-f", "--filename", help="a HelmRelease manifest, as it would be applied")
    approve = command("approve", "approve the preview a HelmRelease waits on (approval: manual)")
    approve.add_argument("-y", "--yes", action="store_true", help="do not ask")
    for sub in (diff, approve):
        sub.add_argument(
            "--color", choices=["auto", "always", "never"], default="auto", help="colour diffs"
        )
        sub.add_argument("--field-manager", default="rudder", help="the operator's --field-manager")


async def _user_command(args: argparse.Namespace) -> int:
    from kubernetes_asyncio.config import ConfigException

    from rudder.cli import commands
    from rudder.cli.kubeconfig import KubeconfigError, resolve
    from rudder.kube.client import TRANSPORT_ERRORS, ApiError, ClientSettings, connect

    try:
        target = resolve(args.kubeconfig, args.context)
        kube = await connect(
            ClientSettings(user_agent="rudder-cli"), merged=target.config, context=target.context
        )
    except (KubeconfigError, ConfigException) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    namespace = args.namespace or target.namespace
    try:
        if args.command == "get":
            return await commands.get(kube, None if args.all_namespaces else namespace)
        if args.command == "reconcile":
            return await commands.reconcile(
                kube, namespace, args.name, wait=args.wait, wait_seconds=args.timeout
            )
        if args.command in ("suspend", "resume"):
            return await commands.set_suspend(kube, namespace, args.name, args.command == "suspend")
        if args.command == "history":
            return await commands.history(kube, namespace, args.name)
        return await _preview_command(args, kube, target, namespace)
    except ApiError as error:
        return commands.failed(error)
    except TRANSPORT_ERRORS as error:
        print(f"error: the API server could not be reached: {error}", file=sys.stderr)
        return 1
    finally:
        await kube.close()


USER_COMMANDS = ("get", "reconcile", "suspend", "resume", "history", "diff", "approve")


async def _preview_command(
    args: argparse.Namespace, kube: KubeClient, target: KubeTarget, namespace: str
) -> int:
    from rudder.cli import preview
    from rudder.kube.client import TRANSPORT_ERRORS, ApiError

    merged = None if target.config is None else {**target.config, "current-context": target.context}
    module = os.environ.get("RUDDER_KUSTOMIZE_MODULE", DEFAULT_KUSTOMIZE_MODULE)
    settings = preview.PreviewSettings(
        merged, field_manager=args.field_manager, kustomize_module=Path(module)
    )
    colour = preview.wants_colour(sys.stdout, args.color)
    if args.command == "approve":
        try:
            return await preview.approve(
                kube, settings, namespace, args.name, yes=args.yes, colour=colour
            )
        except ApiError:
            raise  # said the usual way by the caller
        except TRANSPORT_ERRORS:
            raise
        except Exception as error:
            print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
    if (args.name is None) == (args.filename is None):
        print("error: give a HelmRelease name or -f FILE", file=sys.stderr)
        return preview.ERROR
    try:
        return await preview.diff(
            kube, settings, namespace, args.name, args.filename, colour=colour
        )
    except Exception as error:  # diff's contract: >1 on any error, with what happened
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return preview.ERROR


def _post_renderer_flags(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--kustomize-module",
        default=os.environ.get("RUDDER_KUSTOMIZE_MODULE", DEFAULT_KUSTOMIZE_MODULE),
        help="the kustomize Wasm module that runs postRenderers[].kustomize "
        "(env RUDDER_KUSTOMIZE_MODULE)",
    )
    run.add_argument(
        "--post-renderer-max-memory",
        type=parse_size,
        default="256Mi",
        help="most memory any post-renderer gets, whatever it or the HelmRelease asks for",
    )
    run.add_argument(
        "--post-renderer-timeout",
        type=_positive_duration,
        default="30s",
        help="longest any post-renderer may run on one stream of manifests",
    )
    run.add_argument(
        "--post-renderer-max-output",
        type=parse_size,
        default="16Mi",
        help="largest output accepted from a post-renderer",
    )
    run.add_argument(
        "--post-renderer-allow-network",
        action="store_true",
        help="let Wasm plugins reach the hosts their plugin.yaml lists in allowedHosts "
        "(without it they have no network)",
    )
    run.add_argument(
        "--post-renderer-workers",
        type=_at_least_one,
        default=2,
        help="post-renderers run at once (each in a thread of its own)",
    )
    run.add_argument(
        "--post-renderer-deny-kinds",
        default="",
        help="comma-separated kinds (Kind or group/Kind) a post-renderer may not add",
    )
    run.add_argument(
        "--post-renderer-deny-namespaces",
        default="",
        help="comma-separated namespaces a post-renderer may not add objects to",
    )
    run.add_argument(
        "--max-plugin-size",
        type=parse_size,
        default="64Mi",
        help="largest post-renderer plugin archive pulled (compressed)",
    )


def _positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not longer than zero")
    return seconds


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


def _list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        import helm_python

        print(f"rudder {__version__} (Helm {helm_python.helm_sdk_version()})")
        return 0
    if args.command == "crd":
        sys.stdout.write(CRD_FILE.read_text())
        return 0
    if args.command in USER_COMMANDS:
        return asyncio.run(_user_command(args))

    from rudder.observe.logs import configure_logging

    configure_logging(args.log_format, args.log_level)
    config = OperatorConfig(
        kubeconfig=args.kubeconfig,
        namespaces=tuple(args.namespaces),
        label_selector=args.selector,
        field_manager=args.field_manager,
        concurrency=args.concurrency,
        kube_api_qps=args.kube_api_qps,
        kube_api_burst=args.kube_api_burst,
        chart_cache_dir=Path(args.chart_cache_dir),
        chart_cache_size=args.chart_cache_size,
        max_chart_size=args.max_chart_size,
        max_index_size=args.max_index_size,
        takeover_managers=tuple(filter(None, args.takeover_managers.split(","))),
        drift_managers=tuple(filter(None, args.drift_managers.split(","))),
        metrics_addr=args.metrics_addr,
        leader_elect=args.leader_elect,
        leader_election_namespace=args.leader_election_namespace,
        leader_election_id=args.leader_election_id,
        lease_duration=args.lease_duration,
        renew_deadline=args.renew_deadline,
        retry_period=args.retry_period,
        default_service_account=args.default_service_account,
        no_cross_namespace_refs=args.no_cross_namespace_refs,
        kustomize_module=Path(args.kustomize_module) if args.kustomize_module else None,
        post_renderer_max_memory=args.post_renderer_max_memory,
        post_renderer_timeout=args.post_renderer_timeout,
        post_renderer_max_output=args.post_renderer_max_output,
        post_renderer_allow_network=args.post_renderer_allow_network,
        post_renderer_workers=args.post_renderer_workers,
        post_renderer_deny_kinds=_list(args.post_renderer_deny_kinds),
        post_renderer_deny_namespaces=_list(args.post_renderer_deny_namespaces),
        max_plugin_size=args.max_plugin_size,
        allow_kubeconfig_exec=args.allow_kubeconfig_exec,
        page_previews=not args.no_page_previews,
    )
    from rudder.app import run_operator

    asyncio.run(run_operator(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
