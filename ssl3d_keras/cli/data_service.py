"""`ssl3d data-service`: run the input pipeline on other machines (tf.data service)."""

import click


@click.group("data-service", context_settings={"help_option_names": ["-h", "--help"]})
def data_service():
    """Start tf.data service servers that run pretraining's input pipeline.

    When the CPUs of the training machine cannot cut examples as fast as the
    model consumes them (jigsaw, CPC and exemplar at 128^3), start one
    dispatcher and a worker on each spare machine, then train with
    `ssl3d pretrain ... --data-service HOST:PORT`. Workers must read the same
    prepared shards (a shared file system); the phantom generator cannot run
    on them. docs/DISTRIBUTED.md walks through a setup.

    Examples:

        ssl3d data-service dispatcher --port 5050

        ssl3d data-service worker --dispatcher 10.0.0.5:5050 --host 10.0.0.7
    """


@data_service.command()
@click.option("--port", default=5050, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port to listen on (0 picks a free one).")
@click.option("--work-dir", default=None, type=click.Path(file_okay=False),
              help="Journal the dispatcher's state here, so a restarted dispatcher resumes "
                   "its jobs (fault-tolerant mode).")
def dispatcher(port, work_dir):
    """Start the dispatcher and serve until interrupted."""
    from ssl3d_keras.data.service import dispatcher_address, start_dispatcher

    server = start_dispatcher(port, work_dir=work_dir)
    click.echo(f"tf.data service dispatcher listening on {dispatcher_address(server)} "
               f"(train with --data-service HOST:{dispatcher_address(server).rsplit(':', 1)[-1]}). "
               "Ctrl-C stops it.")
    _serve(server)


@data_service.command()
@click.option("--dispatcher", "dispatcher_", required=True, metavar="HOST:PORT",
              help="Address of the dispatcher.")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port of this worker (0 picks a free one).")
@click.option("--host", default=None,
              help="Host name or address by which the training machine reaches this worker "
                   "(default: localhost, which works only on the dispatcher's machine).")
def worker(dispatcher_, port, host):
    """Start a worker registered with the dispatcher and serve until interrupted."""
    from ssl3d_keras.data.service import start_worker

    server = start_worker(dispatcher_, port, worker_address=None if host is None else f"{host}:%port%")
    click.echo(f"tf.data service worker registered with {dispatcher_}. Ctrl-C stops it.")
    _serve(server)


def _serve(server):
    try:
        server.join()
    except KeyboardInterrupt:
        click.echo("Stopped.")
