"""What a snapshot captures besides the database: code trees and environment facts."""
