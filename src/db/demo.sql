-- pgwarden sandbox demo schema: a small shop. Seeded once, deterministic, owned by `pgwarden_agent`.
CREATE TABLE customers (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL UNIQUE,
    phone       text,
    country     char(2) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE customers IS 'People who bought something. email and phone are personal data.';
COMMENT ON COLUMN customers.email IS 'Personal data (PII)';
COMMENT ON COLUMN customers.phone IS 'Personal data (PII)';

CREATE TABLE products (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku         text NOT NULL UNIQUE,
    name        text NOT NULL,
    price       numeric(10,2) NOT NULL CHECK (price >= 0),
    tags        text[] NOT NULL DEFAULT '{}',
    attributes  jsonb NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE products IS 'Catalogue of things we sell.';

CREATE TABLE orders (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id  bigint NOT NULL REFERENCES customers(id),
    product_id   integer NOT NULL REFERENCES products(id),
    quantity     integer NOT NULL CHECK (quantity > 0),
    total        numeric(12,2) NOT NULL,
    status       text NOT NULL CHECK (status IN ('pending','paid','shipped','refunded')),
    ordered_at   timestamptz NOT NULL
);
CREATE INDEX orders_customer_id_idx ON orders (customer_id);
CREATE INDEX orders_ordered_at_idx ON orders (ordered_at);
COMMENT ON TABLE orders IS 'One row per order line.';

INSERT INTO products (sku, name, price, tags, attributes)
SELECT 'SKU-' || lpad(i::text, 4, '0'),
       (ARRAY['Kettle','Teapot','Mug','Grinder','Scale','Filter','Tin','Spoon'])[1 + i % 8] || ' ' || i,
       round((4.5 + (i * 37 % 150))::numeric, 2),
       ARRAY[(ARRAY['kitchen','coffee','tea','gift'])[1 + i % 4]],
       jsonb_build_object('color', (ARRAY['black','white','steel'])[1 + i % 3], 'weight_g', 100 + i * 13)
FROM generate_series(1, 24) AS i;

INSERT INTO customers (name, email, phone, country, created_at)
SELECT (ARRAY['Ada','Grace','Alan','Edsger','Barbara','Donald','Frances','Ken','Radia','Tim'])[1 + i % 10]
           || ' ' || (ARRAY['Lovelace','Hopper','Turing','Dijkstra','Liskov','Knuth','Allen','Thompson','Perlman','Berners-Lee'])[1 + (i * 7) % 10],
       -- Not derivable from `id`, so a masked column really hides something in the demo.
       lower((ARRAY['ada','grace','alan','edsger','barbara','donald','frances','ken','radia','tim'])[1 + i % 10])
           || '.' || substr(md5('email' || i), 1, 8) || '@example.com',
       '+44 20 7946 ' || lpad(((('x' || substr(md5('phone' || i), 1, 6))::bit(24)::int) % 10000)::text, 4, '0'),
       (ARRAY['GB','DE','FR','US','NL','SE'])[1 + i % 6],
       timestamptz '2025-01-01 09:00:00+00' + (i * interval '17 hours')
FROM generate_series(1, 200) AS i;

INSERT INTO orders (customer_id, product_id, quantity, total, status, ordered_at)
SELECT c, p, q, q * (SELECT price FROM products WHERE id = p),
       (ARRAY['pending','paid','paid','shipped','shipped','refunded'])[1 + i % 6],
       timestamptz '2025-03-01 00:00:00+00' + (i * interval '5 hours 13 minutes')
FROM (SELECT i, 1 + (i * 31) % 200 AS c, 1 + (i * 7) % 24 AS p, 1 + i % 4 AS q
      FROM generate_series(1, 1500) AS i) AS g;

CREATE SCHEMA analytics;
COMMENT ON SCHEMA analytics IS 'Reporting views over the shop tables.';
CREATE VIEW analytics.monthly_revenue AS
SELECT date_trunc('month', ordered_at) AS month, count(*) AS orders, sum(total) AS revenue
FROM orders WHERE status IN ('paid','shipped')
GROUP BY 1;
COMMENT ON VIEW analytics.monthly_revenue IS 'Paid and shipped revenue per month.';
ANALYZE;
