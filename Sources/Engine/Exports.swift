// JSONValue, IdempotencyKey and the other parsers of untrusted input live in InputParsing (so
// the libFuzzer harnesses can build them alone); every user of the Engine sees them as before.
@_exported import InputParsing
