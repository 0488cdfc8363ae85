-- A connection's disable_escaping (issue 12): the admin credentials go into the connection URL's
-- {{username}} and {{password}} as they are, neither percent-encoded nor quoted. Off for every
-- existing connection, which keeps escaping as before.
ALTER TABLE connections ADD COLUMN disable_escaping INTEGER NOT NULL DEFAULT 0;
