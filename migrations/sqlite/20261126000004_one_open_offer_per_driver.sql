-- A driver holds at most one open offer at a time, also when several engine processes
-- dispatch from one database.
CREATE UNIQUE INDEX offers_one_open_per_driver ON offers (driver_id) WHERE status = 'open';
