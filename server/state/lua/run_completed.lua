-- The function returned: the run is completed with its output.
-- ARGV[8] output_json
-- Returns 1.
return finish('completed', ARGV[8], '')
