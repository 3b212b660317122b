-- Every applied batch rewrites the counter rows it touches. Room left on each page lets the new
-- version stay on the page of the old one (a HOT update: no new index entries) instead of
-- moving to another page and adding an entry to every index of the table.
ALTER TABLE rec_user_products SET (fillfactor = 50);
ALTER TABLE rec_scores SET (fillfactor = 50);
ALTER TABLE an_products SET (fillfactor = 50);
ALTER TABLE an_users SET (fillfactor = 50);
