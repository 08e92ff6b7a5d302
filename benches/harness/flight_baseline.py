"""The transport baseline of W6: a pyarrow Flight server that streams one
Parquet file's batches from memory, so that only gRPC and Arrow IPC are timed.

    python -m harness.flight_baseline FILE.parquet PORT
"""

import sys

import pyarrow as pa
import pyarrow.flight as fl
import pyarrow.parquet as pq


class Baseline(fl.FlightServerBase):
    def __init__(self, location, table):
        super().__init__(location)
        self.table = table

    def do_get(self, context, ticket):
        return fl.RecordBatchStream(self.table)


def main():
    path, port = sys.argv[1], int(sys.argv[2])
    # Plain strings, as Agora's server sends by default: sliced string views
    # would carry their whole data buffers into every IPC message.
    table = pq.read_table(path)
    schema = pa.schema([pa.field(f.name, pa.string() if f.type == pa.string_view() else f.type) for f in table.schema])
    table = table.cast(schema).combine_chunks()
    # Batches of the size Agora streams (DataFusion's 8,192 rows).
    batches = table.to_batches(max_chunksize=8192)

    server = Baseline(f"grpc://127.0.0.1:{port}", pa.Table.from_batches(batches, table.schema))
    server.serve()


if __name__ == "__main__":
    main()
