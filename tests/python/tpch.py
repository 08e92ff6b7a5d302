"""TPC-H queries written against the demo mesh's names (domain.product)."""

Q3 = """
SELECT l.l_orderkey, sum(l.l_extendedprice * (1 - l.l_discount)) AS revenue, o.o_orderdate, o.o_shippriority
FROM customers.customer c
JOIN sales.orders o ON c.c_custkey = o.o_custkey
JOIN sales.lineitem l ON l.l_orderkey = o.o_orderkey
WHERE c.c_mktsegment = 'BUILDING'
  AND o.o_orderdate < date '1995-03-15'
  AND l.l_shipdate > date '1995-03-15'
GROUP BY l.l_orderkey, o.o_orderdate, o.o_shippriority
ORDER BY revenue DESC, o.o_orderdate, l.l_orderkey
LIMIT 10
"""

Q5 = """
SELECT n.n_name, sum(l.l_extendedprice * (1 - l.l_discount)) AS revenue
FROM customers.customer c
JOIN sales.orders o ON c.c_custkey = o.o_custkey
JOIN sales.lineitem l ON l.l_orderkey = o.o_orderkey
JOIN supply.supplier s ON l.l_suppkey = s.s_suppkey AND c.c_nationkey = s.s_nationkey
JOIN customers.nation n ON s.s_nationkey = n.n_nationkey
JOIN customers.region r ON n.n_regionkey = r.r_regionkey
WHERE r.r_name = 'ASIA'
  AND o.o_orderdate >= date '1994-01-01'
  AND o.o_orderdate < date '1995-01-01'
GROUP BY n.n_name
ORDER BY revenue DESC, n.n_name
"""

Q10 = """
SELECT c.c_custkey, c.c_name, sum(l.l_extendedprice * (1 - l.l_discount)) AS revenue,
       c.c_acctbal, n.n_name, c.c_address, c.c_phone, c.c_comment
FROM customers.customer c
JOIN sales.orders o ON c.c_custkey = o.o_custkey
JOIN sales.lineitem l ON l.l_orderkey = o.o_orderkey
JOIN customers.nation n ON c.c_nationkey = n.n_nationkey
WHERE o.o_orderdate >= date '1993-10-01'
  AND o.o_orderdate < date '1994-01-01'
  AND l.l_returnflag = 'R'
GROUP BY c.c_custkey, c.c_name, c.c_acctbal, c.c_phone, n.n_name, c.c_address, c.c_comment
ORDER BY revenue DESC, c.c_custkey
LIMIT 20
"""

# Orders per year and supplier nation, across all three domains and both formats.
MESH_JOIN = """
SELECT o.year, s.s_nationkey, count(*) AS lines, sum(l.l_quantity) AS quantity
FROM sales.orders o
JOIN sales.lineitem l ON l.l_orderkey = o.o_orderkey
JOIN customers.customer c ON o.o_custkey = c.c_custkey
JOIN supply.supplier s ON l.l_suppkey = s.s_suppkey
WHERE c.c_mktsegment = 'AUTOMOBILE'
GROUP BY o.year, s.s_nationkey
ORDER BY o.year, s.s_nationkey
"""

QUERIES = {"q3": Q3, "q5": Q5, "q10": Q10, "mesh_join": MESH_JOIN}
